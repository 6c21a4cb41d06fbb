"""Benchmark of the dedup service against plain datasketch and rensa, in one run.

Data: personas from a seeded grammar (role × domain × place × activities ×
trait, 15-30 words), with planted near-duplicates built by inserting,
deleting or replacing words, so each planted pair's word-set Jaccard is known
exactly (0.8-1.0; cosmetic edits such as case or punctuation give 1.0).

Definitions (word sets as `synthgraph.tools.minhash.tokenize` makes them):
- recall@0.92: share of planted duplicates with exact Jaccard ≥ 0.92 to their
  source that were dropped;
- precision: share of dropped personas whose exact Jaccard with the kept persona
  they were matched to (`nearest_id`, or the peer's verified candidate) is ≥ 0.9;
- rate: personas per second end to end (tokenise → sign → index → verify), on
  texts already in memory; peak memory is the worker's peak RSS, and "+MB" the
  part above the generated data.

Each method runs in its own subprocess (clean peak memory), one after the other.
Plain datasketch is too slow for large sizes: it runs on the first
`--datasketch-max` personas of the same stream, and its rate is the one measured there.
`ours-ray` is the same MinHash stage on Ray Data (local Ray on this machine's cores,
started outside the timing); the run prints whether its verdicts equal `ours`.

    python benchmarks/dedup.py                      # 100k and 1M, + embedding stage on 5,000
    python benchmarks/dedup.py --quick              # 20k, small peers, 500 embeddings
    python benchmarks/dedup.py --sizes 100000 --embed 0
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# --- a seeded persona grammar ------------------------------------------------------------

# fmt: off
AGES = ["young", "retired", "mid-career", "semi-retired", "newly qualified", "veteran", "self-taught",
        "award-winning", "part-time", "freelance", "former", "ambitious", "soft-spoken", "energetic"]
ROLES = ["nurse", "data engineer", "marine biologist", "pastry chef", "civil engineer", "librarian",
         "high school teacher", "paramedic", "architect", "beekeeper", "software developer", "translator",
         "social worker", "journalist", "pharmacist", "carpenter", "airline pilot", "geologist", "violinist",
         "urban planner", "veterinarian", "electrician", "midwife", "sommelier", "park ranger", "actuary",
         "physiotherapist", "museum curator", "fisherman", "court interpreter", "radiologist", "baker",
         "mechanic", "tax advisor", "choreographer", "glassblower", "wildlife photographer", "locksmith",
         "epidemiologist", "tailor", "game designer", "farmer", "diplomat", "firefighter", "ceramicist",
         "statistician", "bookbinder", "climate scientist", "speech therapist", "stonemason", "cartographer",
         "sound engineer", "shepherd", "robotics researcher", "dentist", "florist", "historian", "welder",
         "copy editor", "nutritionist", "surveyor", "puppeteer", "accountant", "chemist", "barista",
         "tour guide", "zookeeper", "optician", "lawyer", "dock worker"]
DOMAINS = ["paediatric care", "supply chains", "coral reefs", "sourdough fermentation", "bridge design",
           "rare manuscripts", "renewable energy", "emergency medicine", "timber housing", "urban gardens",
           "machine translation", "refugee support", "investigative reporting", "antibiotic resistance",
           "furniture restoration", "mountain rescue", "volcanic soils", "baroque music", "public transport",
           "animal behaviour", "solar installations", "home births", "natural wines", "forest trails",
           "pension funds", "sports injuries", "textile history", "deep-sea fishing", "legal aid",
           "medical imaging", "gluten-free baking", "vintage engines", "small business taxes", "folk dance",
           "stained glass", "bird migration", "safe locks", "disease outbreaks", "bespoke suits",
           "board games", "organic farming", "trade negotiations", "wildfire prevention", "glazes",
           "survey sampling", "old books", "sea ice", "stuttering", "cathedral repair", "nautical maps",
           "film sound", "sheep breeding", "warehouse robots", "orthodontics", "wedding bouquets",
           "medieval trade", "ship hulls", "style guides", "sports diets", "land registries"]
PLACES = ["Lisbon", "Oslo", "Nairobi", "Osaka", "Lima", "Montreal", "Krakow", "Accra", "Valparaiso",
          "Hanoi", "Tbilisi", "Glasgow", "Porto Alegre", "Bergen", "Cork", "Dakar", "Kyoto", "Tallinn",
          "Marseille", "Cusco", "Auckland", "Hobart", "Ljubljana", "Bilbao", "Tromso", "Cebu", "Izmir",
          "Mombasa", "Quito", "Seville", "Leipzig", "Reykjavik", "Halifax", "Bologna", "Gdansk", "Fukuoka",
          "Cape Town", "Chiang Mai", "Medellin", "Tampere", "Galway", "Trieste", "Salzburg", "Aarhus",
          "Busan", "Da Nang", "Kraków outskirts", "rural Wales", "the Scottish Highlands", "a Greek island",
          "a fishing village", "the Andes", "the Alps", "a border town", "a mining town", "the Outback"]
ACTIVITIES = ["restores vintage motorcycles", "volunteers at a food bank", "paints watercolour landscapes",
              "teaches knot tying to kids", "brews experimental ciders", "runs marathons in the rain",
              "collects antique maps", "builds wooden canoes", "sings in a community choir",
              "mentors first-generation students", "keeps a rooftop vegetable garden", "writes crime novels",
              "repairs broken radios", "organises neighbourhood clean-ups", "photographs abandoned factories",
              "plays chess in the park", "fosters rescue dogs", "learns Japanese calligraphy",
              "hosts a local history podcast", "grows chillies on a balcony", "swims in the sea all winter",
              "codes small games for fun", "bakes bread for neighbours", "rides a cargo bike everywhere",
              "restores old pianos", "translates poetry on the side", "climbs indoor walls after work",
              "knits sweaters for charity", "studies bird calls at dawn", "campaigns for safer cycling lanes",
              "coaches a youth football team", "makes short documentaries", "reads tarot at parties",
              "tends an allotment with friends", "fixes bicycles for free", "dances tango on fridays",
              "maps hiking routes", "keeps detailed weather logs", "carves spoons from driftwood",
              "sails a small dinghy", "cooks for a soup kitchen", "plays bass in a punk band",
              "teaches adults to read", "collects vinyl records", "runs a book club", "forages for mushrooms",
              "builds model railways", "volunteers with hospice patients", "practises archery",
              "writes letters to pen pals", "restores stone walls", "raises chickens in the backyard",
              "organises film nights", "paints miniature figures", "studies old recipes",
              "repairs clocks", "rows on the river at sunrise", "teaches yoga to seniors",
              "grows bonsai trees", "volunteers as a museum guide", "designs board game prototypes"]
TIMES = ["", "", " on weekends", " every summer", " in the evenings", " during school holidays",
         " before dawn", " whenever possible", " twice a month", " after long shifts"]
TRAITS = ["", "", ", known for a dry sense of humour", ", quietly stubborn about details",
          ", always curious about strangers", ", famously unpunctual", ", patient with beginners",
          ", sceptical of quick fixes", ", generous with time", ", fond of long walks",
          ", distrustful of jargon", ", proud of a huge spice collection", ", allergic to small talk",
          ", happiest outdoors", ", fluent in four languages", ", never without a notebook"]
FILLERS = ["quite", "genuinely", "locally", "deeply", "really", "mostly", "proudly", "quietly",
           "notably", "truly", "often", "widely", "keenly", "rather", "fairly", "warmly"]
# fmt: on


def persona(rng: random.Random) -> str:
    age = rng.choice(AGES)
    article = "An" if age[0] in "aeiou" else "A"
    first, second = rng.sample(ACTIVITIES, 2)
    return (
        f"{article} {age} {rng.choice(ROLES)} from {rng.choice(PLACES)} specialising in "
        f"{rng.choice(DOMAINS)} who {first} and {second}{rng.choice(TIMES)}{rng.choice(TRAITS)}."
    )


def near_duplicate(text: str, rng: random.Random) -> str:
    """Insert, delete or replace 0-3 words (0: cosmetic only: case and punctuation)."""
    words = text.rstrip(".").split()
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
        op, at = rng.choice(["insert", "delete", "replace"]), rng.randrange(len(words))
        filler = rng.choice(FILLERS)
        if op == "insert":
            words.insert(at, filler)
        elif op == "delete" and len(words) > 8:
            del words[at]
        else:
            words[at] = filler
    out = " ".join(words)
    return rng.choice([out + ".", out + "!", out.lower() + ".", out.upper(), out + " ."])


def make_data(n: int, seed: int, dup_rate: float) -> tuple[list[str], list[tuple[int, int]]]:
    """n personas; `dup_rate` of them are planted near-duplicates of an earlier original."""
    rng = random.Random(seed)
    texts: list[str] = []
    planted: list[tuple[int, int]] = []  # (duplicate, source)
    originals: list[int] = []
    for i in range(n):
        if originals and rng.random() < dup_rate:
            source = rng.choice(originals)
            texts.append(near_duplicate(texts[source], rng))
            planted.append((i, source))
        else:
            texts.append(persona(rng))
            originals.append(i)
    return texts, planted


# --- memory ---------------------------------------------------------------------------------


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MB
    return float("nan")


def _reset_peak() -> None:
    # Linux: writing 5 resets the peak RSS (VmHWM) to the current RSS.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


# --- methods (each returns dropped index -> matched index) ------------------------------------------


def run_ours(
    texts: list[str], verify: str, distributed: bool = False
) -> tuple[dict[int, int], dict[str, Any]]:
    from synthgraph.tools.minhash import MinHashDeduper
    from synthgraph.tools.minhash_ray import RayMinHashDeduper

    ids = [str(i) for i in range(len(texts))]
    kind = RayMinHashDeduper if distributed else MinHashDeduper
    deduper = kind(0.9, verify=verify)  # type: ignore[arg-type]
    verdicts = deduper.dedup(texts, ids)
    deduper.commit(verdicts.kept)  # index the kept ones (in memory here)
    dropped = {i: int(verdicts.nearest_id[i]) for i in range(len(texts)) if not verdicts.kept[i]}  # type: ignore[arg-type]
    # A digest of every verdict (kept, nearest, score): the Ray path must give the local one.
    digest = hashlib.sha256(
        json.dumps([verdicts.kept.tolist(), verdicts.nearest_id, verdicts.score.tolist()]).encode()
    ).hexdigest()[:16]
    return dropped, {
        "bands": f"{deduper.bands}x{deduper.rows}",
        "candidates": verdicts.candidates,
        "verdicts": digest,
    }


def run_service(texts: list[str]) -> tuple[dict[int, int], dict[str, Any]]:
    """The whole service on records, persisting its index to a temporary data dir."""
    from synthgraph.tools.dedup import DedupService

    records = [{"id": str(i), "persona": t} for i, t in enumerate(texts)]
    with tempfile.TemporaryDirectory() as data_dir:
        result = DedupService("bench", method="minhash", data_dir=Path(data_dir)).dedup(
            records, "persona"
        )
        size = (Path(data_dir) / "dedup" / "bench.minhash.npz").stat().st_size
    dropped = {int(r["id"]): int(r["dedup"]["nearest_id"]) for r in result.dropped}
    return dropped, {"index_mb": round(size / 2**20, 1)}


def _greedy(signatures: list[Any], lsh: Any, insert: Any) -> dict[int, int]:
    """Greedy dedup over per-document sketches, verified by estimated Jaccard ≥ 0.9."""
    dropped: dict[int, int] = {}
    for i, sketch in enumerate(signatures):
        best, best_score = -1, 0.9
        for key in lsh.query(sketch):
            score = sketch.jaccard(signatures[key])
            if score >= best_score:
                best, best_score = key, score
        if best >= 0:
            dropped[i] = best
        else:
            insert(i, sketch)
    return dropped


def run_datasketch(texts: list[str]) -> tuple[dict[int, int], dict[str, Any]]:
    from datasketch import MinHash, MinHashLSH

    from synthgraph.tools.minhash import tokenize

    lsh = MinHashLSH(threshold=0.9, num_perm=128)
    signatures = []
    for text in texts:  # plain per-document usage: one MinHash, one update per word
        sketch = MinHash(num_perm=128)
        for word in tokenize(text):
            sketch.update(word.encode("utf-8"))
        signatures.append(sketch)
    return _greedy(signatures, lsh, lsh.insert), {"bands": f"{lsh.b}x{lsh.r}"}


def run_rensa(texts: list[str]) -> tuple[dict[int, int], dict[str, Any]]:
    from rensa import RMinHash, RMinHashLSH

    from synthgraph.tools.minhash import tokenize

    # 16 × 8: recall like ours at 0.9 (bands must divide 128; 12 × 10 would not).
    lsh = RMinHashLSH(threshold=0.9, num_perm=128, num_bands=16)
    signatures = RMinHash.from_token_sets([list(tokenize(t)) for t in texts], 128, 42)
    return _greedy(signatures, lsh, lsh.insert), {"bands": "16x8"}


METHODS = {
    "ours": lambda t: run_ours(t, "exact"),
    "ours-signature": lambda t: run_ours(t, "signature"),
    "ours-ray": lambda t: run_ours(t, "exact", distributed=True),
    "ours-service": run_service,
    "rensa": run_rensa,
    "datasketch": run_datasketch,
}


def evaluate(
    texts: list[str], planted: list[tuple[int, int]], dropped: dict[int, int]
) -> dict[str, Any]:
    from synthgraph.tools.minhash import jaccard, tokenize

    cache: dict[int, set[str]] = {}

    def words(i: int) -> set[str]:
        if i not in cache:
            cache[i] = tokenize(texts[i])
        return cache[i]

    truth = [(d, jaccard(words(d), words(s))) for d, s in planted]
    high = [d for d, j in truth if j >= 0.92]
    band = [d for d, j in truth if 0.9 <= j < 0.92]
    low = [d for d, j in truth if j < 0.9]
    good = sum(jaccard(words(d), words(m)) >= 0.9 for d, m in dropped.items())
    return {
        "planted": len(planted),
        "recall_092": sum(d in dropped for d in high) / max(len(high), 1),
        "recall_090_092": sum(d in dropped for d in band) / max(len(band), 1),
        "dropped_below_09": sum(d in dropped for d in low) / max(len(low), 1),
        "precision": good / max(len(dropped), 1),
        "dropped": len(dropped),
    }


def worker(method: str, size: int, seed: int, dup_rate: float) -> dict[str, Any]:
    texts, planted = make_data(size, seed, dup_rate)
    # Imports and one-off initialisation stay outside the timing.
    import datasketch  # noqa: F401
    import rensa  # noqa: F401

    from synthgraph.tools import dedup, minhash  # noqa: F401

    minhash.tokenize_batch(texts[:10])
    if method == "ours-ray":  # start Ray and its workers outside the timing
        from synthgraph.tools.ray_support import init_ray

        init_ray()
        run_ours(texts[:20_000], "exact", distributed=True)  # 2 blocks: a worker per core
    base = _status("VmRSS")
    _reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    dropped, extra = METHODS[method](texts)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    peak = _status("VmHWM")
    return {
        "method": method,
        "n": size,
        "seconds": round(seconds, 2),
        "rate": size / seconds,
        # CPU time of this process: what an idle core would give when the machine is shared
        # (not for Ray, whose workers are other processes)
        "cpu_rate": float("nan") if method == "ours-ray" else size / cpu_seconds,
        "peak_mb": round(peak),
        "above_data_mb": round(peak - base),
        **extra,
        **evaluate(texts, planted, dropped),
    }


def embedding_stage(count: int, seed: int) -> dict[str, Any]:
    """Stage 2 alone on `count` distinct personas: MiniLM encoding, Chroma query and writes."""
    from synthgraph.tools.dedup import DedupService
    from synthgraph.tools.embeddings import get_embeddings

    texts, _ = make_data(count, seed, 0.0)
    records = [{"id": str(i), "persona": t} for i, t in enumerate(texts)]
    model = get_embeddings()
    model.encode(texts[:64])  # load the model outside the timings
    start = time.perf_counter()
    model.encode(texts)
    encode_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as data_dir:
        from synthgraph.tools.embeddings import get_chroma_client
        from synthgraph.tools.settings import Settings

        client = get_chroma_client(Settings(data_dir=Path(data_dir)))
        service = DedupService(
            "bench", method="embedding", data_dir=Path(data_dir), chroma_client=client
        )
        start = time.perf_counter()
        first = service.dedup(records, "persona")
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        again = service.dedup(records, "persona")  # every one is found in Chroma now
        again_s = time.perf_counter() - start
    return {
        "n": count,
        "encode_rate": count / encode_s,
        "service_rate": count / first_s,
        "rerun_rate": count / again_s,
        "kept_first": len(first.kept),
        "kept_rerun": len(again.kept),
    }


# --- the driver ----------------------------------------------------------------------------------


def _spawn(args: list[str]) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated persona counts")
    parser.add_argument(
        "--datasketch-max", type=int, default=20_000, help="plain datasketch subset size"
    )
    parser.add_argument("--rensa-max", type=int, default=1_000_000, help="rensa subset size")
    parser.add_argument(
        "--embed", type=int, default=5_000, help="personas for the embedding stage (0: skip)"
    )
    parser.add_argument(
        "--dup-rate", type=float, default=0.1, help="share of planted near-duplicates"
    )
    parser.add_argument(
        "--no-ray", dest="ray", action="store_false", help="skip the Ray Data path (ours-ray)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="20k personas, 5k peers, 500 embeddings"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = (
            embedding_stage(args.size, args.seed)
            if args.worker == "embedding"
            else worker(args.worker, args.size, args.seed, args.dup_rate)
        )
        print(json.dumps(result))
        return
    if args.quick:
        args.sizes, args.datasketch_max, args.rensa_max = "20000", 5_000, 20_000
        args.embed = 500 if args.embed == 5_000 else args.embed

    common = ["--seed", str(args.seed), "--dup-rate", str(args.dup_rate)]
    rows: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        plan = [
            ("ours", size),
            ("ours-signature", size),
            ("ours-service", size),
            *([("ours-ray", size)] if args.ray else []),
            ("rensa", min(size, args.rensa_max)),
            ("datasketch", min(size, args.datasketch_max)),
        ]
        for method, n in plan:
            print(f"… {method} on {n:,} personas", file=sys.stderr, flush=True)
            row = _spawn(["--worker", method, "--size", str(n), *common])
            row["stream"] = size
            rows.append(row)

    print("\nMinHash stage (threshold 0.9, 128 permutations; one run, 2 shared cores)")
    header = (
        f"{'stream':>9} {'method':<15} {'bands':>6} {'n':>9} {'s':>7} {'personas/s':>11} {'× ds':>6} "
        f"{'/CPU-s':>8} {'× ds':>6} "
        f"{'peak MB':>8} {'+MB':>6} {'rec≥.92':>8} {'rec.90-.92':>10} {'drop<.9':>8} {'precision':>9}"
    )
    print(header)
    for row in rows:
        datasketch = next(
            r for r in rows if r["stream"] == row["stream"] and r["method"] == "datasketch"
        )
        print(
            f"{row['stream']:>9,} {row['method']:<15} {row.get('bands', ''):>6} {row['n']:>9,} "
            f"{row['seconds']:>7.2f} {row['rate']:>11,.0f} {row['rate'] / datasketch['rate']:>6.1f} "
            f"{row['cpu_rate']:>8,.0f} {row['cpu_rate'] / datasketch['cpu_rate']:>6.1f} "
            f"{row['peak_mb']:>8,} {row['above_data_mb']:>6,} {row['recall_092']:>8.4f} "
            f"{row['recall_090_092']:>10.4f} {row['dropped_below_09']:>8.4f} {row['precision']:>9.4f}"
        )
    print(
        "× ds: rate over plain datasketch's rate measured on its subset (n column); /CPU-s: personas"
    )
    print(
        "per CPU-second of the worker (wall-clock rates suffer when other jobs share the 2 cores)."
    )
    print("rec≥.92 / rec.90-.92: planted duplicates dropped, by exact Jaccard to their source;")
    print("drop<.9: planted pairs under 0.9 dropped anyway; precision: drops whose exact Jaccard")
    print("with the matched kept persona is ≥ 0.9. ours-ray: local Ray on this machine's cores")
    print("(Ray started beforehand); peak MB is the driver's.")
    for row in rows:
        if row["method"] == "ours-ray":
            local = next(r for r in rows if r["stream"] == row["stream"] and r["method"] == "ours")
            same = "equal" if row["verdicts"] == local["verdicts"] else "DIFFERENT"
            print(f"ours-ray verdicts on {row['n']:,}: {same} to ours (kept, nearest id, score)")

    embedding: dict[str, Any] | None = None
    if args.embed:
        print(f"… embedding stage on {args.embed:,} personas", file=sys.stderr, flush=True)
        embedding = _spawn(["--worker", "embedding", "--size", str(args.embed), *common])
        print(f"\nEmbedding stage (MiniLM, Chroma cosine) on {embedding['n']:,} distinct personas")
        print(f"  encode only          {embedding['encode_rate']:>8,.0f} personas/s")
        print(
            f"  service, first run   {embedding['service_rate']:>8,.0f} personas/s "
            f"(encode + Chroma query + write; kept {embedding['kept_first']:,})"
        )
        print(
            f"  service, rerun       {embedding['rerun_rate']:>8,.0f} personas/s "
            f"(all found in Chroma; kept {embedding['kept_rerun']:,})"
        )
    if args.json:
        args.json.write_text(json.dumps({"minhash": rows, "embedding": embedding}, indent=2))


if __name__ == "__main__":
    main()
