"""What a person sees: the chat app in Debian's Chromium driven by Playwright.

Screenshots go to tests/artifacts/ (gitignored). Every request the browser makes to another host
than the app is aborted: the page must work offline.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from llm_servers import Reply, scripted_llm, scripted_server  # noqa: F401 - scripted_llm is a fixture
from ui_server import ARTIFACTS, serve_app, ui_pipeline

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
SEEDS_DIR = ROOT / "seeds"
GOLDEN_PATH = ROOT / "eval" / "golden.jsonl"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000

HOSTILE_ARTICLE = """date 2021-06-02
# Hostile test article <script>window.__pwned_title=1</script>

The hostile article says the secret code word is zebra. It hides <script>window.__pwned_doc=1</script> in its text.

It also carries an image tag <img src=x onerror="window.__pwned_img=1"> that must stay text.
"""
HOSTILE_ANSWER = 'The code word is zebra <img src=x onerror="window.__pwned_answer=1"><script>window.__pwned_answer2=1</script> [1].'
FLAGS = ["__pwned_doc", "__pwned_img", "__pwned_answer", "__pwned_answer2", "__pwned_title"]

# Anything the page's DOM holds that could run: event-handler attributes, scripts, javascript: links.
EXECUTABLE_IN = """root => {
  const found = [];
  for (const el of root.querySelectorAll('*')) {
    for (const a of el.attributes) {
      if (a.name.startsWith('on') && a.value.includes('__pwned')) found.push(`${el.tagName} ${a.name}`);
      if (/^\\s*javascript:/i.test(a.value)) found.push(`${el.tagName} ${a.name}=${a.value}`);
    }
    if (el.tagName === 'SCRIPT' && el.textContent.includes('__pwned')) found.push('SCRIPT ' + el.textContent);
  }
  return found;
}"""


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_context(browser):
    """A factory of browser contexts that reach only the app; all closed after the test, failed or not."""
    made = []

    def make(app_url: str):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(app_url) else route.abort())
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def seed_app(seed_index, embedder, pipeline, tmp_path_factory):
    """The app over the seed index, extractive; the Evaluate tab reads and writes a private eval folder."""
    eval_dir = tmp_path_factory.mktemp("ui-eval")
    shutil.copy(GOLDEN_PATH, eval_dir / GOLDEN_PATH.name)
    pipe = ui_pipeline(seed_index, embedder, tmp_path_factory.mktemp("ui-browser-data"), None, store=pipeline.store)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ui.evaluate.EVAL_DIR", eval_dir)
        with serve_app(pipe) as running:
            running.eval_dir = eval_dir
            yield running


@pytest.fixture(scope="module")
def hostile_app(embedder, tmp_path_factory):
    """The app over the seeds plus a hostile article, in llm mode against the scripted server."""
    from rag.indexing import build_index
    from rag.settings import Settings

    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(SEEDS_DIR, root / "seeds")
    (root / "seeds" / "999_hostile.txt").write_text(HOSTILE_ARTICLE, encoding="utf-8")
    index_settings = Settings(_env_file=None, index_dir=root / "index", seeds_dir=root / "seeds")
    build_index(index_settings, embedder)
    # require_support off: the model's own (hostile) sentence must reach the page, not a quoted fallback
    pipe = ui_pipeline(index_settings, embedder, root / "data", scripted_server().base_url, mode="llm", require_support=False)
    with serve_app(pipe) as running:
        yield running


def ask_in_browser(page: Page, app_url: str, question: str) -> None:
    page.goto(app_url + "/", wait_until="domcontentloaded")
    box = page.get_by_placeholder("e.g. How much money")
    box.fill(question)
    box.press("Enter")
    # the trace link comes with the final answer only, never with the streamed tokens
    expect(page.locator(".sources .trace a")).to_be_visible()


def test_question_answer_and_citation_open_the_article_at_the_passage(new_context, seed_app, artifacts):
    context = new_context(seed_app.url)
    page = context.new_page()

    ask_in_browser(page, seed_app.url, "How much money did Russia promise to lend Belarus?")

    bot = page.locator('[data-testid="bot"]').last
    expect(bot).to_contain_text("$1.5 billion")
    marker = bot.locator("a.cite").first
    expect(marker).to_have_text("[1]")
    href = marker.get_attribute("href")
    chunk_id = href.split("chunk=")[1].split("#")[0]
    passage = next(c for c in seed_app.pipeline.store.chunks if c.chunk_id == chunk_id)
    expect(page.locator(".sources .source").first).to_have_class("source cited")
    page.screenshot(path=artifacts / "chat-answer.png", full_page=True)

    with context.expect_page() as opened:
        marker.click()
    article = opened.value
    article.wait_for_load_state("domcontentloaded")

    assert article.url == seed_app.url + href
    mark = article.locator("mark#passage")
    expect(mark).to_have_count(1)
    expect(mark).to_be_visible()
    expect(mark).to_be_in_viewport()
    expect(mark).to_contain_text("saying Russia would extend Belarus a government loan of $1.5 billion")
    assert " ".join(mark.inner_text().split()) == " ".join(passage.text.split())
    article.screenshot(path=artifacts / "article-passage.png")


def test_markup_in_articles_and_model_answers_is_shown_as_text_never_run(new_context, hostile_app, scripted_llm, artifacts):
    scripted_llm.always(Reply(HOSTILE_ANSWER))
    context = new_context(hostile_app.url)
    page = context.new_page()

    ask_in_browser(page, hostile_app.url, "What is the secret code word?")

    assert scripted_llm.requests, "the answer must come from the scripted model"
    bot = page.locator('[data-testid="bot"]').last
    sources = page.locator(".sources")
    expect(bot).to_contain_text("The code word is zebra")
    page.wait_for_timeout(500)  # time for any injected image's onerror to fire
    page.screenshot(path=artifacts / "xss-chat.png", full_page=True)

    assert page.evaluate(f"() => {FLAGS!r}.filter(name => window[name] !== undefined)") == []
    for region in (bot, sources):
        assert region.locator("script, img, iframe, object, embed").count() == 0
    assert page.locator("body").evaluate(EXECUTABLE_IN) == []
    # the markup is visible as text instead
    assert '<img src=x onerror="window.__pwned_answer=1">' in bot.inner_text()
    assert "<script>window.__pwned_answer2=1</script>" in bot.inner_text()
    assert "<script>window.__pwned_doc=1</script>" in sources.inner_text()
    assert '<img src=x onerror="window.__pwned_img=1">' in sources.inner_text()
    expect(page.get_by_text("Hostile test article <script>window.__pwned_title=1</script>").first).to_be_visible()

    # the check above can see an injection: the same markup put into the DOM does run
    page.evaluate("""() => { const d = document.createElement('div');
        d.innerHTML = '<img src=x onerror="window.__control=1">'; document.body.appendChild(d); }""")
    page.wait_for_function("() => window.__control === 1")

    with context.expect_page() as opened:
        bot.locator("a.cite").first.click()
    article = opened.value
    article.wait_for_load_state("domcontentloaded")
    assert "/article/999_" in article.url
    article.wait_for_timeout(300)
    assert article.evaluate(f"() => {FLAGS!r}.filter(name => window[name] !== undefined)") == []
    assert article.locator("script, img").count() == 0
    assert article.locator("body").evaluate(EXECUTABLE_IN) == []
    text = article.locator("body").inner_text()
    assert "<script>window.__pwned_doc=1</script>" in text
    assert '<img src=x onerror="window.__pwned_img=1">' in text
    expect(article.locator("mark#passage")).to_contain_text("the secret code word is zebra")
    article.screenshot(path=artifacts / "xss-article.png")


def choose(page: Page, label: str, option: str) -> None:
    """Pick an option of a Gradio dropdown."""
    page.get_by_role("combobox", name=label, exact=True).filter(visible=True).click()
    page.get_by_role("option", name=option, exact=True).filter(visible=True).last.click()  # the list just opened


def test_evaluate_tab_uploads_runs_reopens_compares_and_grades(new_context, seed_app, artifacts, tmp_path):
    page = new_context(seed_app.url).new_page()
    page.goto(seed_app.url + "/", wait_until="domcontentloaded")
    page.get_by_role("tab", name="Evaluate").click()

    good = [line for line in GOLDEN_PATH.read_text().splitlines() if line.strip()][:3]
    upload = tmp_path / "three.jsonl"
    upload.write_text("\n".join([good[0], good[1], '{"id": "broken", oops', good[2]]) + "\n")
    page.locator('input[type="file"][accept=".jsonl, .csv"]').set_input_files(upload)
    expect(shown(page, "1 line(s) skipped")).to_be_visible(timeout=30_000)
    expect(shown(page, ":3: invalid JSON")).to_be_visible()  # the bad line, by its number

    page.get_by_label("Only the first N questions (0: all)").fill("2")
    page.get_by_role("button", name="Run evaluation").click()
    expect(shown(page, "2 questions from")).to_be_visible(timeout=120_000)
    page.get_by_label("Only the first N questions (0: all)").fill("0")
    page.get_by_role("button", name="Run evaluation").click()
    expect(shown(page, "3 questions from")).to_be_visible(timeout=120_000)
    expect(shown(page, "95% interval (bootstrap)")).to_be_visible()
    first, second = sorted(p.name for p in (seed_app.eval_dir / "runs").iterdir())

    choose(page, "Open a run", first)
    page.get_by_role("button", name="Open", exact=True).click()
    expect(shown(page, f"Run {first}")).to_be_visible()
    choose(page, "Compare run A", first)
    choose(page, "with run B", second)
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(shown(page, "95% interval of the delta (paired bootstrap)")).to_be_visible(timeout=30_000)
    expect(page.locator('img[alt="metric deltas"]')).to_be_visible()

    choose(page, "Open a run", second)
    page.get_by_role("button", name="Open", exact=True).click()
    expect(shown(page, f"Run {second}")).to_be_visible()
    for qid, grade in zip(("q001", "q002", "q003"), ("correct", "wrong", "correct")):
        choose(page, "Question", qid)
        expect(page.locator("h4").filter(has_text=f"{qid}:")).to_be_visible()
        page.get_by_label(grade, exact=True).filter(visible=True).check()
        page.get_by_role("button", name="Save grade").click()
        expect(shown(page, f"{['q001', 'q002', 'q003'].index(qid) + 1} graded")).to_be_visible()
    expect(shown(page, "Cohen's kappa")).to_be_visible()
    page.screenshot(path=artifacts / "evaluate-tab.png", full_page=True)


def test_a_chat_answer_is_saved_as_a_golden_question(new_context, seed_app):
    page = new_context(seed_app.url).new_page()
    ask_in_browser(page, seed_app.url, "How much money did Russia promise to lend Belarus?")
    page.get_by_text("Save the latest answer as a golden question").click()
    page.get_by_role("button", name="Draft from the latest answer").click()
    expect(page.get_by_label("Reference answer (edit before saving)")).to_have_value(re.compile(r"\$1\.5 billion"))
    page.get_by_label("Reference answer (edit before saving)").fill("Russia promised a $1.5 billion loan.")
    page.get_by_role("button", name="Save to the golden set").click()
    expect(page.locator(".toast-body").filter(has_text="Saved chat-")).to_be_visible()
    (line,) = (seed_app.eval_dir / "from-chat.jsonl").read_text().splitlines()
    saved = json.loads(line)
    assert saved["user_input"] == "How much money did Russia promise to lend Belarus?"
    assert saved["reference"] == "Russia promised a $1.5 billion loan." and saved["reference_doc_ids"]
    assert any("$1.5 billion" in c for c in saved["reference_contexts"])


def test_article_link_scrolls_a_passage_far_down_the_article_into_view(new_context, seed_app, artifacts):
    from ui.render import article_url

    deep = max(seed_app.pipeline.store.chunks, key=lambda c: c.start)
    page = new_context(seed_app.url).new_page()

    page.goto(seed_app.url + article_url(deep.doc_id, deep.chunk_id), wait_until="domcontentloaded")

    mark = page.locator("mark#passage")
    expect(mark).to_be_in_viewport()
    expect(page.locator("h1")).not_to_be_in_viewport()
    assert page.evaluate("() => window.scrollY") > 0
    assert " ".join(mark.inner_text().split()) == " ".join(deep.text.split())
    page.screenshot(path=artifacts / "article-deep-passage.png")


# ---- the Library tab ----------------------------------------------------------------------------------------------
LIBRARY_ARTICLE = """Minsk opens a glass bridge over the Svislach

date 2021-07-01

The city of Minsk opened a glass footbridge over the Svislach river on Thursday. The bridge is 212 metres long
and was designed by the architect Olga Vinokurova, who said it took four years to build.
"""
LIBRARY_QUESTION = "Who designed the glass footbridge over the Svislach river?"


@pytest.fixture
def library_app(embedder, tmp_path):
    from rag.indexing import build_index
    from rag.settings import Settings

    shutil.copytree(SEEDS_DIR, tmp_path / "seeds")
    index_settings = Settings(_env_file=None, index_dir=tmp_path / "index", seeds_dir=tmp_path / "seeds",
                              library_dir=tmp_path / "library", library_max_mb=1, library_max_files=20)
    build_index(index_settings, embedder)
    pipe = ui_pipeline(index_settings, embedder, tmp_path / "data", None)
    with serve_app(pipe) as running:
        yield running


def shown(page: Page, text: str):
    """The first visible element holding `text` (the other tabs keep theirs, hidden)."""
    return page.get_by_text(text).filter(visible=True).first


def open_library(page: Page, app_url: str) -> None:
    page.goto(app_url + "/", wait_until="domcontentloaded")
    page.get_by_role("tab", name="Library").click()
    expect(page.get_by_text("Add articles")).to_be_visible()


def upload_in_library(page: Page, files) -> None:
    page.locator('input[type="file"][multiple]').set_input_files(files)
    page.get_by_role("button", name="Add and index").click()


def test_library_adds_an_article_that_is_then_cited_and_removes_it(new_context, library_app, artifacts):
    page = new_context(library_app.url).new_page()
    open_library(page, library_app.url)
    expect(shown(page, "Putin Backs Lukashenko")).to_be_visible()  # the documents listed
    upload_in_library(page, {"name": "glass-bridge.txt", "mimeType": "text/plain", "buffer": LIBRARY_ARTICLE.encode()})
    expect(shown(page, "Index updated")).to_be_visible(timeout=120_000)
    expect(shown(page, "Minsk opens a glass bridge over the Svislach")).to_be_visible()
    page.screenshot(path=artifacts / "library-added.png", full_page=True)

    page.get_by_role("tab", name="Ask").click()
    ask_in_browser(page, library_app.url, LIBRARY_QUESTION)
    expect(page.locator('[data-testid="bot"]').last).to_contain_text("Olga Vinokurova")
    expect(page.locator(".sources .source.cited").first).to_contain_text("glass bridge")

    open_library(page, library_app.url)
    page.get_by_label("Remove an article").click()
    page.get_by_role("option", name="Minsk opens a glass bridge").click()
    page.get_by_role("button", name="Remove and re-index").click()
    expect(shown(page, "Removed ")).to_be_visible(timeout=120_000)
    ask_in_browser(page, library_app.url, LIBRARY_QUESTION)
    expect(page.locator('[data-testid="bot"]').last).not_to_contain_text("Olga Vinokurova")
    expect(page.locator(".sources")).not_to_contain_text("glass bridge")


def test_library_refuses_hostile_uploads_and_keeps_serving(new_context, library_app, artifacts):
    page = new_context(library_app.url).new_page()
    open_library(page, library_app.url)
    library = library_app.settings.library_dir

    upload_in_library(page, [{"name": "../../escape.txt", "mimeType": "text/plain", "buffer": b"An escaped article about Minsk."},
                             {"name": "binary.pdf", "mimeType": "application/pdf", "buffer": bytes(range(256)) * 64}])
    expect(shown(page, "Not added")).to_be_visible(timeout=120_000)
    expect(shown(page, "binary.pdf")).to_be_visible()
    assert sorted(p.name for p in library.iterdir()) == ["binary.pdf", "escape.txt"]  # inside the folder, named plainly
    assert not (library.parent.parent / "escape.txt").exists()

    huge = library_app.settings.data_dir / "huge.txt"
    with huge.open("wb") as out:
        out.truncate(50 * 1024 * 1024)  # 50 MB (sparse), far over the 1 MB limit
    page.locator('input[type="file"][multiple]').set_input_files(huge)
    expect(page.locator(".toast-body").filter(has_text="huge.txt").first).to_contain_text("exceed the maximum allowed size")

    open_library(page, library_app.url)
    upload_in_library(page, [{"name": f"tiny-{i}.txt", "mimeType": "text/plain", "buffer": b"Tiny."} for i in range(1000)])
    expect(shown(page, "1000 files at once")).to_be_visible(timeout=120_000)
    assert not list(library.glob("tiny-*")) and not list(library.glob("huge*"))
    page.screenshot(path=artifacts / "library-refused.png", full_page=True)

    page.get_by_role("tab", name="Ask").click()
    ask_in_browser(page, library_app.url, "How much money did Russia promise to lend Belarus?")
    expect(page.locator('[data-testid="bot"]').last).to_contain_text("$1.5 billion")  # the index kept serving


def test_a_conversation_survives_a_reload_and_a_new_chat_starts_empty(new_context, seed_app):
    page = new_context(seed_app.url).new_page()
    ask_in_browser(page, seed_app.url, "How much money did Russia promise to lend Belarus?")
    expect(page.locator('[data-testid="bot"]').last).to_contain_text("$1.5 billion")
    saved = page.get_by_role("gridcell", name=re.compile(r"^How much money did Russia promise.*\.\.\.$"))
    expect(saved).to_be_visible()  # listed among the saved conversations (cut short) once stored: reload only then
    page.reload(wait_until="domcontentloaded")
    expect(saved).to_be_visible()  # ...and still there, read back from the browser's storage
    saved.click()
    expect(page.locator('[data-testid="bot"]').last).to_contain_text("$1.5 billion")
    page.get_by_role("button", name="New chat").click()
    expect(page.locator('[data-testid="bot"]')).to_have_count(0)
