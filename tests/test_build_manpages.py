"""benchmarks/build_manpages.py: groff (man and mdoc) to plain text, NAME parsing, the BEIR folder."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from synthgraph.tools.io import read_jsonl
from synthgraph.tools.retrieval_data import load_beir


def load_builder() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "build_manpages.py"
    spec = importlib.util.spec_from_file_location("build_manpages", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


bm = load_builder()

MAN_PAGE = r""".\" Generated page; a comment line
.de XX
.B this macro body is never text
..
.TH LS 1 "2022" "coreutils"
.SH NAME
ls \- list directory contents
.SH SYNOPSIS
.B ls
[\fI\,OPTION\/\fR]...
.SH "DESCRIPTION"
.PP
List information about the \fBFILEs\fR (the current directory by default).\" why
.if n \{\
.ds is never shown
.\}
.TP
\fB\-a\fR, \fB\-\-all\fR
do not ignore entries starting with \(lq.\(rq \[em] see
.BR dir (1)
and \*(lqcolors\*(rq in \s-1SIZE\s0 units;
a\ b\~c \e escaped \[u00E9]t\['e]\&.
one line \
continued.
.TS
tab(;);
l l.
_
Name;Meaning
T{
long cell
T};x
.TE
.IP \(bu 2
bullet item
.IP "\-v" 4
verbose
.SH "SEE ALSO"
.BR dir (1)
"""

MDOC_PAGE = r""".Dd November 15, 2016
.Dt SCP 1
.Os
.Sh NAME
.Nm scp ,
.Nm scopy
.Nd OpenSSH secure file copy
.Sh DESCRIPTION
.Nm
copies files over
.Xr ssh 1 ,
given as
.Sm off
.Oo user @ Oc host : Op path ,
.Sm on
or
.Op Fl l Ar limit .
.Bl -tag -width Ds
.It Fl q
Quiet mode:
.Dq no progress .
.El
"""


def test_man_page_to_name_and_description() -> None:
    page = bm.parse_page(MAN_PAGE, min_chars=10)
    assert page.names == ("ls",)
    assert page.summary == "list directory contents"
    assert page.description == (
        "List information about the FILEs (the current directory by default). "
        '-a, --all do not ignore entries starting with "." — see dir(1) '
        'and "colors" in SIZE units; a b c \\ escaped ét. one line continued. '
        "Name Meaning long cell x bullet item -v verbose"
    )


def test_mdoc_page_to_name_and_description() -> None:
    page = bm.parse_page(MDOC_PAGE, min_chars=10)
    assert page.names == ("scp", "scopy")
    assert page.summary == "OpenSSH secure file copy"
    assert page.description == (
        "scp copies files over ssh(1), given as [user@]host:[path], or [-l limit]. "
        '-q Quiet mode: "no progress".'
    )


def test_pages_left_out() -> None:
    assert bm.parse_page(".so man1/ls.1\n") is None
    assert bm.parse_page(MAN_PAGE, min_chars=1000) is None  # DESCRIPTION too short
    no_name = MAN_PAGE.replace(".SH NAME\nls \\- list directory contents\n", "")
    assert bm.parse_page(no_name, min_chars=10) is None
    no_dash = MAN_PAGE.replace("ls \\- list", "ls list")
    assert bm.parse_page(no_dash, min_chars=10) is None


def test_arguments_and_names_in() -> None:
    assert bm.arguments(r'"SEE ALSO" a\ b "say ""hi"""') == ["SEE ALSO", r"a\ b", 'say "hi"']
    assert bm.names_in("compress or decompress .xz files", ("xz", "unxz"))
    assert not bm.names_in("page through xzless output", ("xz",))
    assert bm.family("gcloud_compute_instances_create.1") == "gcloud"
    assert bm.family("git-add.1") == "git"


def write_page(folder: Path, name: str, summary: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = f".TH X 1\n.SH NAME\n{name} \\- {summary}\n.SH DESCRIPTION\n{body}\n"
    path = folder / f"{name}.1.gz"
    path.write_bytes(gzip.compress(source.encode()))
    return path


def test_build_writes_a_beir_folder(tmp_path: Path) -> None:
    man, out = tmp_path / "man", tmp_path / "beir"
    filler = " more words about it" * 12
    for number in range(6):
        write_page(man / "man1", f"tool{number}", f"does job {number}", f"Tool {number}{filler}")
    write_page(man / "man1", "xz", "compress .xz files", "xz compresses" + filler)
    write_page(man / "man1", "zcopy", "duplicate", "Tool 0" + filler)  # tool0 comes first
    write_page(man / "man1", "short", "too short", "Tiny.")
    (man / "man1" / "redirect.1.gz").write_bytes(gzip.compress(b".so man1/tool0.1\n"))
    (man / "man1" / "alias.1.gz").symlink_to(man / "man1" / "tool1.1.gz")
    write_page(man / "de" / "man1", "werkzeug", "macht etwas", "Werkzeug" + filler)

    counts = bm.build(man, out, sections=("1",), seed=3, per_family=0)

    corpus = {row["_id"]: row for row in read_jsonl(out / "corpus.jsonl")}
    assert set(corpus) == {f"tool{n}.1" for n in range(6)} | {"xz.1"}
    assert corpus["tool2.1"]["title"] == "tool2"
    queries = {row["text"] for row in read_jsonl(out / "queries.jsonl")}
    assert queries == {f"does job {n}" for n in range(6)}  # the xz query names its page
    assert counts["query dropped: names its page"] == 1
    dev, test = load_beir(out, "dev"), load_beir(out, "test")
    assert len(dev.queries) == len(test.queries) == 3
    assert not set(dev.queries) & set(test.queries)
    for split in (dev, test):
        for query, relevant in split.qrels.items():
            (doc,) = relevant
            assert split.queries[query] == f"does job {doc[4]}"
    assert (out / "qrels" / "dev.tsv").read_text().startswith("query-id\tcorpus-id\tscore\n")


def test_build_samples_large_families(tmp_path: Path) -> None:
    man, out = tmp_path / "man", tmp_path / "beir"
    filler = " more words about it" * 12
    for part in ("add", "commit", "push"):
        write_page(man / "man1", f"git-{part}", f"{part} things", f"Git {part}{filler}")
    write_page(man / "man1", "ls", "list directory contents", "List files" + filler)

    counts = bm.build(man, out, sections=("1",), seed=3, per_family=2)

    ids = [row["_id"] for row in read_jsonl(out / "corpus.jsonl")]
    assert "ls.1" in ids and sum(i.startswith("git-") for i in ids) == 2
    assert counts["skipped: over 2 pages of one family"] == 1
    assert counts["queries dev"] + counts["queries test"] == counts["queries"] == 3
