"""The documentation's sources stay complete and consistent (no Sphinx needed; CI builds the site itself)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"


def test_every_benchmark_result_has_a_docs_page_in_the_toc():
    toc = (DOCS / "benchmarks" / "index.md").read_text()
    # *_notes.md are hand-written parts already appended to their generated file (harness.py table --notes)
    names = sorted(p.stem for p in RESULTS.glob("*.md") if not p.stem.endswith("_notes"))
    assert names
    for name in names:
        page = DOCS / "benchmarks" / "results" / f"{name}.md"
        assert page.is_file(), f"benchmarks/results/{name}.md has no page: add {page.relative_to(ROOT)}"
        assert f"../../../benchmarks/results/{name}.md" in page.read_text(), page
        assert f"<results/{name}>" in toc, f"results/{name} is missing from docs/benchmarks/index.md's toctree"


def test_method_page_has_sections_1_to_9_in_order():
    numbers = [int(m) for m in re.findall(r"^## (\d+)\. ", (DOCS / "method.md").read_text(), re.M)]
    assert numbers == list(range(1, 10))


def test_code_references_to_the_method_page_name_existing_sections():
    pattern = re.compile(r"docs/method\.md`{0,2} sections? (\d+)(?:-(\d+))?")
    found = 0
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for m in pattern.finditer(path.read_text()):
            found += 1
            for n in filter(None, m.groups()):
                assert 1 <= int(n) <= 9, f"{path.relative_to(ROOT)}: {m.group(0)!r}"
    assert found


def test_readme_keeps_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install torch==2.13.0 -e . && scgpcl demo' in readme
    assert 'pip install torch==2.13.0 -e ".[test]" && python -m pytest' in readme
