"""Shared message wording: argument names for Python or the command line, the empty-cluster warning."""

from __future__ import annotations

import warnings

from scgpcl._messages import arg, cli_context, clip, empty_clusters_message, in_cli, listing, warn_user


def test_arg_names_the_flag_only_inside_the_command():
    assert not in_cli() and arg("key=", "--key") == "key="
    with cli_context():
        assert in_cli() and arg("key=", "--key") == "--key"
    assert arg("key=", "--key") == "key="


def test_listing():
    assert listing([]) == "none"
    assert listing(["a", 1]) == "'a', '1'"
    assert listing([str(i) for i in range(25)], limit=3) == "'0', '1', '2' and 22 more"


def test_clip_cuts_quoted_messages_at_a_word_boundary():
    # torch's and h5py's messages were cut at 200 characters mid-word ("...the process gro")
    long = "Connection closed by peer " * 20
    out = clip(long)
    assert len(out) <= 200 and out.endswith("...") and out[:-3].endswith(("peer", "Connection", "closed", "by"))
    assert clip("short\n  message") == "short message"  # line breaks and runs of spaces are folded
    assert clip("x" * 300, 50) == "x" * 47 + "..."  # one long word is still cut to the limit
    assert [len(clip("abcdef", n)) for n in (0, 2, 3, 4)] == [0, 2, 3, 4]  # never longer than the limit


def test_empty_cluster_message_says_what_happened_and_what_to_try():
    # it said "the data may hold fewer groups than n_clusters" on data that held K labelled groups
    text = empty_clusters_message(3, 5, finetuned=True)
    assert text.startswith("2 of the 5 clusters ended empty after fine-tuning, so the labels use 3 cluster numbers")
    assert "fewer groups than n_clusters" not in text and "not evidence that the data hold fewer than 5 groups" in text
    assert "random_state=" in text and "finetune=False" in text and "n_clusters=3" in text
    with cli_context():
        text = empty_clusters_message(3, 5, finetuned=True)
    assert "--random-state" in text and "--no-finetune" in text and "--n-clusters 3" in text and "=" not in text
    # without fine-tuning there is nothing to switch off
    text = empty_clusters_message(4, 5, finetuned=False)
    assert "after k-means on the pre-trained embedding" in text and "finetune" not in text


def test_warn_user_names_the_callers_line_and_only_rank_0_warns(monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_user("from here")
        monkeypatch.setenv("RANK", "1")  # another process of a torchrun job: same data, rank 0 says it
        warn_user("not from rank 1")
        monkeypatch.setenv("RANK", "0")
        warn_user("from rank 0")
    assert [str(w.message) for w in caught] == ["from here", "from rank 0"]
    assert all(w.filename == __file__ and issubclass(w.category, UserWarning) for w in caught)


def test_still_working_speaks_every_interval_innermost_only(caplog):
    # the long phases without a progress bar (a UMAP of 100,000 cells: 2.5 minutes) printed nothing
    import threading
    import time

    from scgpcl._messages import still_working

    with caplog.at_level("INFO", logger="scgpcl"):
        with still_working("outer", every=0.1):
            time.sleep(0.35)
            with still_working("inner", every=0.1):
                time.sleep(0.35)
        time.sleep(0.25)  # after the block: silent
    lines = [r.getMessage() for r in caplog.records]
    outer = [m for m in lines if m.startswith("outer: still working")]
    inner = [m for m in lines if m.startswith("inner: still working")]
    assert len(outer) >= 2 and len(inner) >= 2 and "s so far" in outer[0]
    # while the inner phase ran, the outer one was quiet: no outer line between the first and the last inner one
    # (by position: the inner lines can read alike, so lines.index would find the first one twice)
    at = [i for i, m in enumerate(lines) if m.startswith("inner: still working")]
    assert not any(m.startswith("outer") for m in lines[at[0]:at[-1]])
    assert not any(t.name == "scgpcl-still-working" for t in threading.enumerate())
    with still_working("quick", every=60):  # a phase shorter than the interval says nothing and ends at once
        pass


def test_still_working_in_two_threads_speaks_for_both(caplog):
    # one stack for all threads silenced a phase of one thread while another thread's phase ran
    import threading
    import time

    from scgpcl._messages import still_working

    def phase(name: str, delay: float, seconds: float) -> None:
        time.sleep(delay)
        with still_working(name, every=0.1):
            time.sleep(seconds)

    with caplog.at_level("INFO", logger="scgpcl"):
        threads = [threading.Thread(target=phase, args=("A", 0.0, 0.55)),
                   threading.Thread(target=phase, args=("B", 0.05, 0.8))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    lines = [r.getMessage() for r in caplog.records]
    # both speak, about every 0.1 s (at least 2 each, not 5 and 8: a loaded machine wakes the threads late);
    # with one stack for both threads A fell silent once B began, after at most one line
    assert sum(m.startswith("A: still working") for m in lines) >= 2
    assert sum(m.startswith("B: still working") for m in lines) >= 2


def test_the_long_phases_without_a_bar_say_they_are_still_working(tmp_path, monkeypatch):
    # the heartbeat itself is tested above; this checks that the phases that were silent for minutes at 100,000
    # cells use it (a call site dropped would pass every other test)
    import contextlib

    import scgpcl
    import scgpcl.model._scgpcl as model_module
    import scgpcl.pl._plots as plots_module
    import scgpcl.report as report_module
    import scgpcl.simulate._cli as simulate_module
    import scgpcl.tl._markers as markers_module
    from scgpcl.cli import main

    from helpers import TINY, toy_counts

    phases = []

    @contextlib.contextmanager
    def recorded(what, every=30):
        phases.append(what)
        yield

    for module in (model_module, plots_module, report_module, simulate_module, markers_module):
        monkeypatch.setattr(module, "still_working", recorded)
    assert main(["simulate", str(tmp_path / "s.h5ad"), "--preset", "demo", "--n-cells", "200", "--n-genes", "300",
                 "--quiet"]) == 0
    a = toy_counts(n_per=30)
    scgpcl.tl.cluster(a, n_clusters=3, random_state=0, progress=False, **TINY)
    scgpcl.report.write_report(a, tmp_path / "r")
    assert phases[:2] == ["simulating", f"writing {tmp_path / 's.h5ad'}"]
    for phase in ("preparing 90 cells", "choosing the cell scaling", "report", "UMAP of 90 cells",
                  "marker genes of 3 clusters (90 cells)"):
        assert phase in phases, (phase, phases)
