"""rag/golden.py: the golden set loads (also with RAGAS' older names); bad lines are named; exports."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rag.errors import RagError
from rag.golden import GoldenItem, load_golden, to_beir_qrels, to_ragas_samples

GOLDEN = Path(__file__).resolve().parents[1] / "eval" / "golden.jsonl"
SEEDS = Path(__file__).resolve().parents[1] / "seeds"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_project_golden_set_loads_and_is_consistent():
    items = load_golden(GOLDEN)
    assert len(items) >= 60
    assert len({i.id for i in items}) == len(items)
    unanswerable = [i for i in items if not i.answerable]
    assert len(unanswerable) >= 8
    seed_ids = {p.stem for p in SEEDS.glob("*.txt")}
    seed_text = " ".join(" ".join(p.read_text(encoding="utf-8").split()) for p in SEEDS.glob("*.txt"))
    for item in items:
        assert item.user_input.strip()
        if item.answerable:
            assert item.reference and item.reference_doc_ids and item.reference_contexts, item.id
            assert set(item.reference_doc_ids) <= seed_ids, item.id
            for context in item.reference_contexts:  # every reference sentence is really in an article
                assert " ".join(context.split()) in seed_text, (item.id, context)
        else:
            assert item.reference_doc_ids == [], item.id
    # follow-up conversations come in turn 1 / turn 2 pairs
    turns = Counter((i.conversation_id, i.turn) for i in items if i.conversation_id)
    conversations = {c for c, _ in turns}
    assert conversations
    assert all(turns[(c, 1)] == 1 and turns[(c, 2)] == 1 for c in conversations)


def test_ragas_old_names_are_read(tmp_path):
    path = write_jsonl(tmp_path / "old.jsonl", [
        {"question": "Who is Trenin?", "ground_truth": "Director of the Carnegie Moscow Center.",
         "contexts": ["said Dmitri Trenin, director of the Carnegie Moscow Center."], "reference_doc_ids": ["000"]},
        {"id": 7, "user_input": "What is the capital of Mars?", "answerable": False},
    ])
    first, second = load_golden(path)
    assert first == GoldenItem(
        id="line1", user_input="Who is Trenin?", reference="Director of the Carnegie Moscow Center.",
        reference_doc_ids=["000"], reference_contexts=["said Dmitri Trenin, director of the Carnegie Moscow Center."],
    )
    assert first.answerable is True
    assert second.id == "7" and second.answerable is False
    assert second.reference == "" and second.reference_contexts == []


def test_unknown_fields_and_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('\n{"id": "a", "user_input": "Q?", "extra": 1}\n\n', encoding="utf-8")
    assert load_golden(path) == [GoldenItem(id="a", user_input="Q?")]


def test_bad_json_line_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"user_input": "fine"}, {"user_input": "fine too"}, '{"user_input": "broken",'])
    with pytest.raises(RagError) as info:
        load_golden(path)
    assert f"{path}:3:" in str(info.value)
    assert "invalid JSON" in str(info.value)


def test_line_without_a_question_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "noq.jsonl", [{"user_input": "fine"}, {"reference": "an answer without a question"}])
    with pytest.raises(RagError, match=r"noq\.jsonl:2: no `user_input`"):
        load_golden(path)


@pytest.mark.parametrize(("content", "words"), [(None, "not found"), (b"", "empty"), (b"\xff\xfe\x00bad", "cannot read")])
def test_unusable_files_are_rag_errors(tmp_path, content, words):
    path = tmp_path / "golden.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RagError) as info:
        load_golden(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_beir_qrels_export():
    items = [
        GoldenItem(id="q1", user_input="?", reference_doc_ids=["d1", "d2"]),
        GoldenItem(id="q2", user_input="?", answerable=False),
        GoldenItem(id="q3", user_input="?", reference_doc_ids=["d3"]),
    ]
    assert to_beir_qrels(items) == ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td2\t1", "q3\td3\t1"]


def test_ragas_samples_export_with_and_without_answers():
    items = [GoldenItem(id="q1", user_input="Who?", reference="Him.", reference_contexts=["He did."]),
             GoldenItem(id="q2", user_input="What?", reference="That.")]
    plain = to_ragas_samples(items)
    assert plain == [
        {"user_input": "Who?", "reference": "Him.", "reference_contexts": ["He did."]},
        {"user_input": "What?", "reference": "That.", "reference_contexts": []},
    ]
    answered = to_ragas_samples(items, {"q1": {"answer": "Him [1].", "sources": [{"text": "He did it."}]}})
    assert answered[0]["response"] == "Him [1]."
    assert answered[0]["retrieved_contexts"] == ["He did it."]
    assert "response" not in answered[1]


def test_to_json_drops_unset_conversation_fields():
    item = GoldenItem(id="q1", user_input="Who?")
    assert "conversation_id" not in item.to_json() and "turn" not in item.to_json()
    follow = GoldenItem(id="q2", user_input="And then?", conversation_id="c1", turn=2)
    assert follow.to_json()["turn"] == 2 and follow.to_json()["conversation_id"] == "c1"


def test_a_golden_set_with_bad_lines_keeps_the_good_ones_and_names_the_bad(tmp_path):
    from rag.golden import read_golden

    path = tmp_path / "g.jsonl"
    path.write_text('{"id": "a", "user_input": "Who?"}\n{oops\n{"id": "c", "question": "Where?", "ground_truth": "Minsk"}\n'
                    '{"id": "d", "user_input": ""}\n', encoding="utf-8")
    items, problems = read_golden(path)
    assert [i.id for i in items] == ["a", "c"] and items[1].reference == "Minsk"
    assert problems == [f"{path}:2: invalid JSON (Expecting property name enclosed in double quotes)",
                        f"{path}:4: no `user_input` (or `question`) field"]


def test_a_csv_golden_set_has_the_same_columns(tmp_path):
    from rag.golden import read_golden

    path = tmp_path / "g.csv"
    path.write_text('id,user_input,reference,reference_doc_ids,reference_contexts,answerable\n'
                    'q1,How much?,$1.5 billion,doc-a|doc-b,"[""a loan of $1.5 billion""]",true\n'
                    'q2,Who won in 2024?,,,,false\n'
                    'q3,Broken?,,,,maybe\n', encoding="utf-8")
    items, problems = read_golden(path)
    assert [(i.id, i.answerable) for i in items] == [("q1", True), ("q2", False)]
    assert items[0].reference_doc_ids == ["doc-a", "doc-b"] and items[0].reference_contexts == ["a loan of $1.5 billion"]
    assert problems == [f"{path}:4: answerable is 'maybe'; use true or false"]
