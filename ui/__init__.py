"""The Gradio chat students use, thin over `rag.pipeline.Pipeline`."""
