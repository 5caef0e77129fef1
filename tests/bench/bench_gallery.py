"""Benchmark (not a test): ``make bench``. The review gallery of a 2,000-job ledger.

* write: ``batchrunner report`` on a ledger of 2,000 jobs (a 2 × 2 matrix and 4 takes of 125
  rows; done with posters and media facts, some with warnings, some failed, a local input
  image on every fifth row), first with no thumbnails made yet, then again;
* open: the page in Debian's headless Chromium, from navigation to interactive (first cards
  rendered and every control wired: ``window.galleryReadyAt``), then a filter and a search.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from batchrunner import gallery
from batchrunner.jobs import NewJob
from batchrunner.ledger import Ledger
from batchrunner.simulator.clips import MediaShape, clip_bytes
from batchrunner.verify import Expected, inspect, media_dir, poster_path
from tests.browser import chromium
from tests.helpers import IMAGE

ROOT = Path(__file__).resolve().parents[2]
JOBS = 2_000


def build(folder: Path, n: int = JOBS) -> Path:
    """A ledger as a finished 2,000-job batch leaves it (written directly, in one transaction:
    a real run commits each state change, which is not what is measured here)."""
    path = folder / "big.db"
    out = folder / "out"
    out.mkdir()
    image = folder / "lighthouse.png"
    shutil.copy(ROOT / "manifests" / "images" / "lighthouse.png", image)
    clip = out / "clip.mp4"
    clip.write_bytes(clip_bytes(MediaShape("16:9", 8.0, True, "720p")))
    facts = inspect(clip, Expected(), folder / "poster.jpg")
    jobs = []
    for i in range(n):
        row, rest = divmod(i, 16)
        ratio, resolution, take = (
            ("16:9", "9:16")[rest % 2],
            ("720p", "1080p")[rest // 2 % 2],
            rest // 4 + 1,
        )
        local = row % 5 == 0
        files = {
            "image_url": {"path": str(image), "sha256": "ab" * 32, "size": 1, "mime": "image/png"}
        }
        jobs.append(
            NewJob(
                job_id=f"shot-{row + 1:04d}~{ratio}~{resolution}~t{take}",
                endpoint="fal-ai/veo3/image-to-video",
                input={"prompt": f"Shot {row + 1}: a slow dolly past a lighthouse, take {take}",
                       "image_url": str(image) if local else IMAGE, "duration": "8s",
                       "generate_audio": True, "aspect_ratio": ratio, "resolution": resolution,
                       "seed": 1000 + i},
                row=row + 1,
                variant=f"{ratio}~{resolution}~t{take}",
                files=files if local else {},
                metadata={"scene": ("coast", "city", "desert", "forest")[row % 4],
                          "notes": f"batch {row // 25}"},
                price_usd=3.20 if resolution == "720p" else 4.00,
            )
        )  # fmt: skip
    with Ledger.open(path) as ledger:
        ledger.start_run("run", options={"out": str(out)})
        ledger.add_jobs(jobs)
        posters = media_dir(path) / "posters"
        posters.mkdir(parents=True)
        with ledger.db.atomic():
            for i, job in enumerate(jobs):
                failed = i % 37 == 0
                warned = i % 11 == 0
                poster = poster_path(media_dir(path), job.job_id)
                if not failed:
                    shutil.copy(folder / "poster.jpg", poster)
                ledger.db.table("jobs").update(
                    job.job_id,
                    {
                        "state": "failed" if failed else "done",
                        "error": "prompt: flagged by a content checker" if failed else None,
                        "cost_usd": job.price_usd,
                        "billed_usd": None if failed else job.price_usd,
                        "output_path": None if failed else str(clip),
                        "media": None if failed else json.dumps(facts.media),
                        "warnings": json.dumps(["duration 4 s, asked for 8 s"] if warned else []),
                        "poster": None if failed else str(poster),
                    },
                )
        ledger.finish_run(1, {})
    return path


def bench_write(path: Path) -> Path:
    started = time.perf_counter()
    page = gallery.report(path)
    first = time.perf_counter() - started
    started = time.perf_counter()
    gallery.report(path)
    again = time.perf_counter() - started
    print(
        f"gallery: {JOBS} jobs written in {first:.2f} s (again, thumbnails made: {again:.2f} s); "
        f"{page.stat().st_size / 1e6:.1f} MB"
    )
    return page


def bench_open(page: Path, tries: int = 3) -> None:
    best = None
    with chromium() as browser:
        for _ in range(tries):
            tab = browser.new_page()
            started = time.perf_counter()
            tab.goto(page.as_uri())
            tab.wait_for_selector("body[data-ready=true]")
            wall = time.perf_counter() - started
            ready = tab.evaluate("window.galleryReadyAt") / 1000
            cards = tab.locator(".card").count()
            started = time.perf_counter()
            tab.select_option('select[data-facet="scene"]', "city")
            tab.fill("#q", "shot 1")
            tab.locator(".card").first.wait_for()
            filtered = time.perf_counter() - started
            tab.close()
            if best is None or ready < best[0]:
                best = (ready, wall, cards, filtered)
    assert best is not None
    ready, wall, cards, filtered = best
    print(
        f"gallery: interactive {ready:.2f} s after navigation ({wall:.2f} s as Playwright saw "
        f"it; {cards} of {JOBS} cards rendered at first); a filter and a search: "
        f"{filtered * 1000:.0f} ms (best of {tries})"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page = bench_write(build(Path(tmp)))
        bench_open(page)


if __name__ == "__main__":
    main()
