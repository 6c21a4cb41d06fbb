"""Build a BEIR folder from the English man pages on this machine (an evaluation collection).

Each page gives one document and at most one query:
- document: `_id` the page's file name without `.gz` (`ls.1`), `title` the names of its NAME
  line (`gzip, gunzip, zcat`), `text` its DESCRIPTION section as plain text (groff and mdoc
  macros and escapes stripped), cut at `--max-chars`;
- query: the NAME line's description (`ls - list directory contents` → `list directory
  contents`), relevant to its own page only.

Pages left out: symlinks and `.so` redirects (copies of another page), pages without a NAME
line or with a DESCRIPTION under `--min-chars`, pages whose DESCRIPTION repeats one already
kept (the first in section and file order stays), and, past `--per-family` pages of one family
(the page name up to its first `-`, `_` or `.`: `gcloud`, `git`, `llvm`), a seeded sample,
so one generated suite (16,000 gcloud pages) does not make up the collection.

Queries left out (their documents stay, as distractors):
- a query that names one of its page's names as a word (`xz - compress or decompress .xz
  files`): the collection asks what apropos users ask, "which command does X", and a query that
  already holds the answer's title is a lexical give-away that measures nothing;
- a query whose text several kept pages share: it has no single right answer.

The queries are split dev/test by a seeded shuffle (`--dev-share`). Only the section folders
`man1` … `man9` of `--man` are read; the localized folders beside them (`de`, `fr`, …) are not.

    python benchmarks/build_manpages.py --out /tmp/manpages-beir
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from synthgraph.tools.io import write_records
from synthgraph.tools.text import clip

MAN = Path("/usr/share/man")
SECTIONS = ("1", "5", "7", "8")  # commands, file formats, overviews, administration

# groff glyph names (`\(xx`, `\[name]`) and mdoc/man strings (`\*(xx`) worth keeping as text;
# any other glyph or string becomes nothing.
GLYPHS = {
    "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'", "Lq": '"', "Rq": '"',
    "em": "—", "en": "–", "hy": "-", "mi": "-", "bu": "•", "co": "©", "rg": "®", "tm": "™",
    "R": "®", "Tm": "™", "de": "°", "ti": "~", "ha": "^", "rs": "\\", "sl": "/", "ba": "|",
    "or": "|", "at": "@", "sh": "#", "Do": "$", "ga": "`", "aa": "'", "ul": "_", "mu": "×",
    "di": "÷", "pl": "+", "eq": "=", "<=": "≤", ">=": "≥", "!=": "≠", "->": "→", "<-": "←",
    "fo": "«", "fc": "»", "Fo": "«", "Fc": "»", "ss": "ß", "Aq": "'", "Ba": "|", "Pi": "π",
}  # fmt: skip
# Escapes with one argument that print nothing: font, size-free registers, strings handled
# above, motions and drawing with a delimited argument.
_NAMED = set("fFnmMgkYV$*")
_DELIMITED = set("hvwoXNlLbDRSxZABC")
_SILENT = set("|^&%:,/){}acdpruz")

# man(7) macros whose arguments are text set in one font, and the alternating ones whose
# arguments are joined without spaces (`.BR ls (1)` → `ls(1)`).
FONT_MACROS = {"B", "I", "R", "SM", "SB", "SS", "OP", "SY", "UE", "ME", "Ss", "TQ"}
ALTERNATING = {"BR", "RB", "BI", "IB", "IR", "RI"}
# mdoc(7) macros that open a line of text; their own name prints nothing.
MDOC = {
    "Ad", "An", "Ap", "Ar", "At", "Bsx", "Bx", "Cd", "Cm", "D1", "Dl", "Dv", "Dx", "Em", "Er",
    "Ev", "Fa", "Fd", "Fl", "Fn", "Ft", "Fx", "Ic", "In", "It", "Lb", "Li", "Lk", "Ms", "Mt",
    "Nd", "Nm", "No", "Ns", "Nx", "Ot", "Ox", "Pa", "Pf", "Ql", "St", "Sx", "Sy", "Ta", "Tn",
    "Ux", "Va", "Vt", "Xr", "Op", "Oo", "Oc", "Dq", "Do", "Dc", "Qq", "Qo", "Qc", "Sq", "So",
    "Sc", "Pq", "Po", "Pc", "Bq", "Bo", "Bc", "Aq", "Ao", "Ac", "Brq", "Bro", "Brc", "Eo", "Ec",
    "Xo", "Xc", "%A", "%B", "%D", "%I", "%J", "%N", "%O", "%P", "%R", "%T", "%U", "%V",
}  # fmt: skip
MDOC_WORDS = {
    "Bx": "BSD", "Bsx": "BSD/OS", "Ox": "OpenBSD", "Nx": "NetBSD", "Fx": "FreeBSD",
    "Dx": "DragonFly", "Ux": "UNIX", "At": "AT&T UNIX", "Nd": "-", "Ta": "",
}  # fmt: skip
# Enclosing mdoc macros: the rest of the line goes between the two marks.
MDOC_ENCLOSE = {
    "Op": "[]", "Dq": '""', "Qq": '""', "Sq": "''", "Pq": "()", "Bq": "[]", "Aq": "<>",
    "Brq": "{}", "Ql": "''",
}  # fmt: skip
MDOC_MARKS = {
    "Oo": "[", "Oc": "]", "Do": '"', "Dc": '"', "Qo": '"', "Qc": '"', "So": "'", "Sc": "'",
    "Po": "(", "Pc": ")", "Bo": "[", "Bc": "]", "Ao": "<", "Ac": ">", "Bro": "{", "Brc": "}",
}  # fmt: skip
# Requests that define macros or skip text up to a line starting with `..`.
DEFINITIONS = {"de", "de1", "dei", "am", "am1", "ami", "ig"}
CONDITIONALS = {"if", "ie", "el", "while"}
HEADINGS = {"SH", "Sh"}
# A NAME line: names, then a dash (`\-`, `--`, an em or en dash), then the description.
NAME_LINE = re.compile(r"^(?P<names>.+?)\s+(?:--?|—|–)\s+(?P<summary>.+)$")


@dataclass(frozen=True)
class Page:
    names: tuple[str, ...]
    summary: str
    description: str


def unescape(text: str) -> str:
    """Plain text of one line of groff: escapes resolved or removed, comments dropped."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "\\" or i + 1 >= n:
            out.append(char)
            i += 1
            continue
        code = text[i + 1]
        i += 2
        if code in '"#':  # comment to the end of the line
            break
        if code == "(":
            out.append(GLYPHS.get(text[i : i + 2], ""))
            i += 2
        elif code == "[":
            end = text.find("]", i)
            end = n if end < 0 else end
            out.append(glyph(text[i:end]))
            i = end + 1
        elif code in _NAMED:
            name, i = _argument(text, i)
            if code == "*":
                out.append(GLYPHS.get(name, ""))
        elif code == "s":
            i = _size_end(text, i)
        elif code in _DELIMITED:
            if i < n:
                end = text.find(text[i], i + 1)
                i = n if end < 0 else end + 1
        elif code in "e\\E":
            out.append("\\")
        elif code in " ~0t":
            out.append(" ")
        elif code not in _SILENT:  # `\-`, `\.`, `\'`, and any other escaped character
            out.append("'" if code == "'" else code)
    return "".join(out)


def glyph(name: str) -> str:
    """A named glyph: `u00E9` style code points, else the GLYPHS table."""
    if re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
        return chr(int(name[1:], 16))
    return GLYPHS.get(name, "")


def _argument(text: str, i: int) -> tuple[str, int]:
    """The name after an escape such as `\\f` or `\\*`: `(xx`, `[name]` or one character."""
    if i >= len(text):
        return "", i
    if text[i] == "(":
        return text[i + 1 : i + 3], i + 3
    if text[i] == "[":
        end = text.find("]", i)
        end = len(text) if end < 0 else end
        return text[i + 1 : end], end + 1
    return text[i], i + 1


def _size_end(text: str, i: int) -> int:
    """Where a `\\s` size escape ends: `\\s+1`, `\\s0`, `\\s10`, `\\s(12`, `\\s[12]`, `\\s'12'`."""
    if i < len(text) and text[i] in "+-":
        i += 1
    if i >= len(text):
        return i
    if text[i] in "(":
        return i + 3
    if text[i] in "['":
        end = text.find("]" if text[i] == "[" else "'", i + 1)
        return len(text) if end < 0 else end + 1
    if text[i] in "123" and i + 1 < len(text) and text[i + 1].isdigit():
        return i + 2  # the old two-digit form, `\s10`
    return i + 1 if text[i].isdigit() else i


def arguments(text: str) -> list[str]:
    """A request's arguments: space separated, `"quoted with spaces"`, `""` inside quotes."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        if text[i] == '"':
            i += 1
            word = []
            while i < n:
                if text[i] == '"':
                    if text[i + 1 : i + 2] == '"':
                        word.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                word.append(text[i])
                i += 1
            args.append("".join(word))
        else:
            start = i
            while i < n and text[i] not in " \t":
                if text[i] == "\\" and i + 1 < n:
                    i += 1  # an escaped space stays inside the word
                i += 1
            args.append(text[start:i])
    return args


def mdoc_line(macro: str, args: list[str], name: str, spacing: bool = True) -> str:
    """The text of a line of mdoc macros (`.It Fl a Ar file`), macros called inside it too;
    without `spacing` (`.Sm off`) its words are joined without spaces."""
    words: list[str] = []
    glue = False  # the next word joins the previous one without a space (`Ns`, `Fl`, `[`)

    def emit(text: str, join_next: bool = False) -> None:
        nonlocal glue
        if glue and words:
            words[-1] += text
        else:
            words.append(text)
        glue = join_next

    closing: list[str] = []
    tokens = [macro, *args]
    tail = ""  # closing punctuation at the end of the line goes after any enclosure's mark
    while len(tokens) > 1 and re.fullmatch(r"[.,:;!?)\]]+", tokens[-1]):
        tail = tokens.pop() + tail
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        plain = following is not None and following not in MDOC
        if token not in MDOC:
            emit(unescape(token))
        elif token == "Ns":
            glue = True
        elif token == "Ap":
            emit("'", join_next=True)
        elif token == "Fl":
            emit("-", join_next=plain)
        elif token == "Nm" and not plain:
            emit(name)
        elif token == "Xr" and plain:
            section = tokens[i + 2] if i + 2 < len(tokens) else ""
            emit(f"{unescape(following or '')}({unescape(section)})")
            i += 2
        elif token in MDOC_ENCLOSE:
            emit(MDOC_ENCLOSE[token][0], join_next=True)
            closing.append(MDOC_ENCLOSE[token][1])
        elif token in MDOC_MARKS:
            opening = token.endswith("o")
            if opening or words:
                glue = glue or not opening
                emit(MDOC_MARKS[token], join_next=opening)
        elif MDOC_WORDS.get(token):
            emit(MDOC_WORDS[token])
        i += 1
    if words:
        words[-1] += "".join(reversed(closing)) + tail
    # mdoc puts spaces around punctuation arguments (`.Nm gzip ,`); written text does not
    return re.sub(r"\s+([.,:;!?)\]])", r"\1", (" " if spacing else "").join(words))


def to_text(lines: list[str], name: str = "") -> str:
    """Plain text of groff source lines (man or mdoc), on one line. `name` stands in for
    mdoc's bare `.Nm`."""
    parts: list[str] = []
    glue = False  # the previous line ended in `\c`: this one continues it without a space
    skip_until: str | None = None
    braces = 0  # open `\{` of a conditional being skipped
    table = False
    table_format = False
    cell = "\t"  # the table's column separator (its `tab(x)` option)
    spacing = True  # mdoc's `.Sm off` joins words (and lines) without spaces
    for raw in lines:
        line = raw.rstrip("\n")
        if skip_until is not None:
            if line.startswith(skip_until):
                skip_until = None
            continue
        if braces:
            braces += line.count("\\{") - line.count("\\}")
            braces = max(braces, 0)
            continue
        text = ""
        if line[:1] in (".", "'"):
            request = line[1:].lstrip()
            macro, _, rest = request.partition(" ")
            if macro.startswith(('\\"', "\\#")) or not macro:
                continue
            macro, rest = macro.strip(), rest.strip()
            if macro in DEFINITIONS:
                skip_until = ".."
                continue
            if macro in CONDITIONALS:
                braces = max(rest.count("\\{") - rest.count("\\}"), 0)
                continue
            if macro == "TS":
                table, table_format, cell = True, True, "\t"
                continue
            if macro == "TE":
                table = False
                continue
            if macro == "Sm":
                spacing = rest != "off" if rest else not spacing
                glue = glue and not spacing
                continue
            args = arguments(rest)
            if macro in FONT_MACROS:
                text = " ".join(unescape(a) for a in args)
            elif macro in ALTERNATING:
                text = "".join(unescape(a) for a in args)
            elif macro == "IP" and args and re.search(r"\w", unescape(args[0])):
                text = unescape(args[0])
            elif macro in MDOC:
                text = mdoc_line(macro, args, name, spacing)
            else:  # layout requests (.PP, .TP, .br, .Bl …) and macros we do not know
                continue
        elif table and table_format:
            # A table's options and format lines end at the first line ending in `.`.
            option = re.search(r"tab\s*\((.)\)", line)
            cell = option[1] if option else cell
            table_format = not line.rstrip().endswith(".")
            continue
        elif table:
            if re.fullmatch(r"\s*[_=]\s*", line):
                continue
            text = unescape(line.replace("T{", " ").replace("T}", " ").replace(cell, " "))
        else:
            text = unescape(line)
        if glue and parts:
            parts[-1] += text
        else:
            parts.append(text)
        glue = line.endswith("\\c") or not spacing
    return " ".join(" ".join(parts).split())


def join_continuations(lines: list[str]) -> list[str]:
    """Source lines with escaped newlines (a line ending in one `\\`) joined to the next."""
    joined: list[str] = []
    carry = ""
    for line in lines:
        line = carry + line
        trailing = len(line) - len(line.rstrip("\\"))
        carry = line[:-1] if trailing % 2 else ""
        if not carry:
            joined.append(line)
    return joined + ([carry] if carry else [])


def split_sections(lines: list[str]) -> dict[str, list[str]]:
    """Source lines per section heading (`.SH NAME`, `.Sh DESCRIPTION`), first occurrence
    of each heading; the heading in upper case."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    pending = False  # `.SH` alone: the heading is the next line
    for line in lines:
        if pending:
            pending = False
            current = sections.setdefault(to_text([line]).upper(), [])
            continue
        if line[:1] in (".", "'"):
            macro, _, rest = line[1:].strip().partition(" ")
            if macro in HEADINGS:
                heading = to_text([f".B {rest}"]).upper()
                if not heading:
                    pending = True
                    continue
                current = [] if heading in sections else sections.setdefault(heading, [])
                continue
        if current is not None:
            current.append(line)
    return sections


def parse_page(source: str, min_chars: int = 200) -> Page | None:
    """Names, NAME description and DESCRIPTION text of a page's groff source, or None when it
    is a `.so` redirect, has no parsable NAME line, or a DESCRIPTION under `min_chars`."""
    lines = join_continuations(source.splitlines())
    first = next((ln for ln in lines if ln.strip() and not ln.startswith(('.\\"', "'\\\""))), "")
    if first.startswith(".so "):
        return None
    sections = split_sections(lines)
    match = NAME_LINE.match(to_text(sections.get("NAME", [])))
    if match is None:
        return None
    names = tuple(n.strip() for n in match["names"].split(",") if n.strip())
    body = next((v for k, v in sections.items() if k.startswith("DESCRIPTION")), [])
    description = to_text(body, names[0] if names else "")
    if not names or len(description) < min_chars:
        return None
    return Page(names, match["summary"].strip(), description)


def names_in(query: str, names: tuple[str, ...]) -> bool:
    """Whether the query holds one of the names as a word (`.xz` counts, `xzless` does not)."""
    return any(
        re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", query, re.IGNORECASE) for name in names
    )


def family(page_id: str) -> str:
    """The suite a page belongs to: its name up to the first `-`, `_` or `.` (`git-add.1` → git)."""
    return re.split(r"[-_.]", page_id, maxsplit=1)[0].lower()


def read_source(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # old pages in Latin-1
        return data.decode("latin-1")


def page_files(man: Path, sections: tuple[str, ...]) -> Iterator[Path]:
    """Regular files of the section folders, in section then name order (no symlinks: they
    are other names of a page read anyway)."""
    for section in sections:
        folder = man / f"man{section}"
        if folder.is_dir():
            yield from (p for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink())


def build(
    man: Path,
    out: Path,
    *,
    sections: tuple[str, ...] = SECTIONS,
    seed: int = 13,
    dev_share: float = 0.5,
    min_chars: int = 200,
    max_chars: int = 3000,
    per_family: int = 25,
) -> Counter[str]:
    """Write the BEIR folder; returns the counts the README reports."""
    counts: Counter[str] = Counter()
    pages: dict[str, Page] = {}
    seen: set[str] = set()
    for path in page_files(man, sections):
        counts["files"] += 1
        page = parse_page(read_source(path), min_chars)
        if page is None:
            counts["skipped: no NAME, short DESCRIPTION or .so"] += 1
        elif page.description in seen:
            counts["skipped: DESCRIPTION repeats another page"] += 1
        else:
            seen.add(page.description)
            pages[path.name.removesuffix(".gz")] = page
    by_family: dict[str, list[str]] = {}
    for page_id in pages:
        by_family.setdefault(family(page_id), []).append(page_id)
    rng = random.Random(seed)
    for members in by_family.values():
        if per_family and len(members) > per_family:
            for page_id in set(members) - set(rng.sample(members, per_family)):
                del pages[page_id]
                counts[f"skipped: over {per_family} pages of one family"] += 1
    summaries = Counter(p.summary.lower() for p in pages.values())
    queries: list[tuple[str, str]] = []  # (page id, query text)
    for page_id, page in pages.items():
        if names_in(page.summary, page.names):
            counts["query dropped: names its page"] += 1
        elif summaries[page.summary.lower()] > 1:
            counts["query dropped: shared by several pages"] += 1
        else:
            queries.append((page_id, page.summary))
    ids = [f"q{number}" for number in range(len(queries))]
    order = ids[:]
    rng.shuffle(order)
    dev = set(order[: round(len(order) * dev_share)])
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    write_records(
        [
            {"_id": page_id, "title": ", ".join(p.names), "text": clip(p.description, max_chars)}
            for page_id, p in pages.items()
        ],
        out / "corpus.jsonl",
    )
    write_records(
        [{"_id": q, "text": text} for q, (_, text) in zip(ids, queries, strict=True)],
        out / "queries.jsonl",
    )
    for split, chosen in (("dev", dev), ("test", set(ids) - dev)):
        rows = [
            f"{q}\t{page_id}\t1\n"
            for q, (page_id, _) in zip(ids, queries, strict=True)
            if q in chosen
        ]
        (out / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(rows), "utf-8"
        )
        counts[f"queries {split}"] = len(rows)
    counts["documents"] = len(pages)
    counts["queries"] = len(queries)
    return counts


def readme(counts: Counter[str], man: Path, args: argparse.Namespace) -> str:
    lines = "\n".join(f"- {name}: {value:,}" for name, value in sorted(counts.items()))
    return f"""# Man pages as a retrieval set (BEIR layout)

Real, human-written text: the English man pages of sections {", ".join(args.sections)} under `{man}`
on the machine that built it (localized folders left out).
- `corpus.jsonl` — {counts["documents"]:,} documents: `_id` is the page file (`ls.1`), `title` the
  names on its NAME line, `text` its DESCRIPTION section as plain text (cut at about
  {args.max_chars:,} characters).
- `queries.jsonl` — {counts["queries"]:,} queries: each is the description part of a page's NAME
  line (`ls - list directory contents` → `list directory contents`).
- `qrels/dev.tsv` ({counts["queries dev"]:,} queries) and `qrels/test.tsv`
  ({counts["queries test"]:,} queries) — each query's relevant document is its own page.

Left out: symlinks and `.so` redirects; pages without a NAME line or with a DESCRIPTION under
{args.min_chars} characters; pages repeating a kept DESCRIPTION; past {args.per_family} pages per
family (name up to the first `-`, `_` or `.`), a seeded sample. Queries naming their own page as a
word (a lexical give-away: apropos users ask for the command they do not know) and queries shared
by several pages are dropped; their documents stay as distractors.

Counts:
{lines}

Made with synthgraph's `benchmarks/build_manpages.py`:

    python benchmarks/build_manpages.py --out DIR --seed {args.seed} --sections {" ".join(args.sections)} \\
        --per-family {args.per_family} --min-chars {args.min_chars} --max-chars {args.max_chars}

Use `dev` while developing; report `test`. Evaluation only: never train on these queries.
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--man", type=Path, default=MAN, help="man page root (man1, man8, …)")
    parser.add_argument("--out", type=Path, required=True, help="BEIR folder to write")
    parser.add_argument("--seed", type=int, default=13, help="dev/test split and family samples")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS))
    parser.add_argument("--dev-share", type=float, default=0.5, help="share of queries in dev")
    parser.add_argument("--min-chars", type=int, default=200, help="shortest DESCRIPTION kept")
    parser.add_argument("--max-chars", type=int, default=3000, help="document text cut")
    parser.add_argument("--per-family", type=int, default=25, help="pages kept per family (0: all)")
    args = parser.parse_args()
    counts = build(
        args.man, args.out, sections=tuple(args.sections), seed=args.seed,
        dev_share=args.dev_share, min_chars=args.min_chars, max_chars=args.max_chars,
        per_family=args.per_family,
    )  # fmt: skip
    (args.out / "README.md").write_text(readme(counts, args.man, args), "utf-8")
    for name, value in sorted(counts.items()):
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
