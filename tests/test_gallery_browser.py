"""The review gallery in a real browser (Debian's headless Chromium, driven by Playwright).

After a simulated run with failures, warnings and a broken download: one card per job, the
filters and the search change what is shown, a video plays in place, and two selected cards
download as a CSV that ``retry --ids FILE --new-take`` turns into new takes, which the next
report shows next to their originals. A screenshot of the page is attached to the test output.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from playwright.sync_api import Page

from batchrunner.cli import cli
from batchrunner.ledger import Ledger
from batchrunner.simulator import SimulatorServer
from tests.browser import chromium
from tests.helpers import IMAGE, TOKEN, counters, fast_config, run_args, write_manifest

ENV = {"BATCHRUNNER_API_KEY": TOKEN}
ROOT = Path(__file__).resolve().parent.parent
SHOTS = [
    # id, scene, aspect ratio, what the simulator does
    ("harbour", "coast", "16:9", ""),
    ("lighthouse", "coast", "9:16", ""),
    ("dunes", "desert", "16:9", " #lie:duration"),
    ("market", "city", "16:9", " #lie:audio"),
    ("tram", "city", "9:16", " #policy"),
    ("rooftops", "city", "16:9", " #policy"),
    ("oasis", "desert", "9:16", " #lie:notvideo"),
    ("cliffs", "coast", "16:9", ""),
]


def manifest(folder: Path) -> Path:
    (folder / "lighthouse.png").write_bytes((ROOT / "manifests/images/lighthouse.png").read_bytes())
    return write_manifest(
        folder / "shots.csv",
        [
            {"id": name, "prompt": f"A slow pan across the {name} at golden hour{lie}",
             "image_url": "lighthouse.png" if name == "lighthouse" else IMAGE,
             "duration": "4s", "aspect_ratio": ratio, "generate_audio": "true",
             "state": scene,  # a column named like the page's own filter: kept apart
             "notes": "hero" if name in ("harbour", "cliffs") else ""}
            for name, scene, ratio, lie in SHOTS
        ],
    )  # fmt: skip


def shown(page: Page) -> list[str]:
    ids: list[str] = page.locator(".card").evaluate_all("els => els.map(e => e.dataset.id)")
    return ids


def pick(page: Page, select: str, value: str) -> None:
    page.select_option(select, value)


@pytest.mark.slow
def test_review_filter_play_select_and_reroll_in_the_browser(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    ledger_path = tmp_path / "ledger.db"
    report = tmp_path / "out" / "report.html"
    with SimulatorServer(fast_config()) as server:
        result = CliRunner().invoke(cli, run_args(server, tmp_path, manifest(tmp_path)), env=ENV)
        assert result.exit_code == 1, result.output  # failed jobs and a failed download
        assert f"review: {report}" in result.output
        assert report.is_file()

        with chromium() as browser:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(report.as_uri())
            page.wait_for_selector("body[data-ready=true]")

            # one card per job, in manifest order, each with its state
            assert shown(page) == [name for name, *_ in SHOTS]
            states = dict(
                zip(
                    shown(page),
                    page.locator(".card").evaluate_all("els => els.map(e => e.dataset.state)"),
                    strict=True,
                )
            )
            assert states == {
                "harbour": "done", "lighthouse": "done", "dunes": "done", "market": "done",
                "tram": "failed", "rooftops": "failed", "oasis": "completed", "cliffs": "done",
            }  # fmt: skip
            dunes = page.locator('.card[data-id="dunes"]')
            assert "duration 2 s, asked for 4 s" in dunes.locator(".warnings").inner_text()
            assert "content" in page.locator('.card[data-id="tram"] .error').inner_text()
            assert "does not decode" in page.locator('.card[data-id="oasis"] .error').inner_text()
            assert page.locator('.card[data-id="lighthouse"] .inputs img').count() == 1
            # a remote input image, loaded or not (offline, an expired link): a tile of its
            # own size named after the file, not a broken-image icon
            remote = page.locator('.card[data-id="harbour"] .inputs img')
            assert remote.get_attribute("alt") == "veo3-i2v-input.png"
            box = remote.bounding_box()
            assert box is not None and (box["width"], box["height"]) == (48, 48)
            assert "spend $12.80" in page.locator("#totals").inner_text()  # 8 × 4 s at $0.40/s

            # filters and search change what is shown
            pick(page, "#f-state", "failed")
            assert shown(page) == ["tram", "rooftops"]
            pick(page, "#f-state", "")
            pick(page, "#f-warn", "yes")
            assert shown(page) == ["dunes", "market"]
            pick(page, "#f-warn", "")
            pick(page, 'select[data-facet="state"]', "coast")
            assert shown(page) == ["harbour", "lighthouse", "cliffs"]
            pick(page, 'select[data-facet="aspect_ratio"]', "9:16")
            assert shown(page) == ["lighthouse"]
            pick(page, "#f-state", "done")  # the job's state, beside the column "state"
            assert shown(page) == ["lighthouse"]
            pick(page, "#f-state", "")
            pick(page, 'select[data-facet="state"]', "")
            pick(page, 'select[data-facet="aspect_ratio"]', "")
            page.select_option('select[data-facet="notes"]', label="(empty) (6)")  # not "all"
            assert shown(page) == ["lighthouse", "dunes", "market", "tram", "rooftops", "oasis"]
            pick(page, 'select[data-facet="notes"]', "")
            page.fill("#q", "MARKET")
            assert shown(page) == ["market"]
            page.fill("#q", "")
            pick(page, "#sort", "state")
            assert shown(page) == [
                "oasis", "harbour", "lighthouse", "dunes", "market", "cliffs", "tram", "rooftops",
            ]  # fmt: skip
            pick(page, "#sort", "row")
            assert len(shown(page)) == len(SHOTS)

            # a video plays in place
            page.locator('.card[data-id="harbour"] .media').click()
            video = page.locator('.card[data-id="harbour"] video')
            video.wait_for()
            page.wait_for_function(
                "() => document.querySelector('.card[data-id=\"harbour\"] video').currentTime > 0.2"
            )
            assert video.evaluate("v => v.error") is None

            # review by keys: the card clicked is the current one; j/k move, x selects,
            # Enter plays and pauses, / goes to the search and Escape back
            current = page.locator(".card.current")
            assert current.get_attribute("data-id") == "harbour"
            page.keyboard.press("j")
            assert current.get_attribute("data-id") == "lighthouse"
            page.keyboard.press("x")
            assert page.inner_text("#selcount") == "1 selected"
            assert "picked" in (current.get_attribute("class") or "")
            page.keyboard.press("x")
            assert page.inner_text("#selcount") == "0 selected"
            page.keyboard.press("Enter")
            played = page.locator('.card[data-id="lighthouse"] video')
            played.wait_for()
            page.wait_for_function(
                "() => document.querySelector('.card[data-id=\"lighthouse\"] video')"
                ".currentTime > 0.1"
            )
            page.keyboard.press("Enter")
            assert played.evaluate("v => v.paused")
            page.keyboard.press("k")
            page.keyboard.press("k")  # not past the first
            assert current.get_attribute("data-id") == "harbour"
            page.locator('.card[data-id="dunes"] .pick').check()  # a click, then keys again
            assert current.get_attribute("data-id") == "dunes"
            page.keyboard.press("k")
            assert current.get_attribute("data-id") == "lighthouse"
            page.keyboard.press("j")
            page.keyboard.press("x")
            assert page.inner_text("#selcount") == "0 selected"  # dunes ticked, then unticked
            page.keyboard.press("/")
            assert page.evaluate("document.activeElement.id") == "q"
            every = shown(page)
            page.keyboard.type("lighth")  # typed into the search (h is no key of the page)
            assert page.input_value("#q") == "lighth" and shown(page) == ["lighthouse"]
            page.keyboard.press("Escape")  # the search emptied, and its filter with it
            assert page.evaluate("document.activeElement === document.body")
            assert page.input_value("#q") == "" and shown(page) == every

            # select two cards, download the selection
            page.locator('.card[data-id="dunes"] .pick').check()
            page.locator('.card[data-id="cliffs"] .pick').check()
            assert page.inner_text("#selcount") == "2 selected"
            with page.expect_download() as download:
                page.click("#download")
            selected = tmp_path / "selected.csv"
            download.value.save_as(selected)

            screenshot = tmp_path / "gallery.png"
            page.screenshot(path=str(screenshot))
            record_property("screenshot", str(screenshot))
            print(f"gallery screenshot: {screenshot}")
            assert errors == []

        with open(selected, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [(r["job_id"], r["state"]) for r in rows] == [("dunes", "done"), ("cliffs", "done")]

        # the CSV goes back to retry: two new takes, announced with their price, bought once
        before = counters(server)["submits"]
        again = CliRunner().invoke(
            cli,
            ["retry", "--ledger", str(ledger_path), "--ids", str(selected), "--new-take", "--json"],
            env=ENV,
        )
        assert again.exit_code == 1, again.output  # the failed jobs are still failed
        assert "new takes to submit: 2, $3.20" in again.stderr
        assert counters(server)["submits"] == before + 2
        summary = json.loads(again.stdout.strip().splitlines()[-1])
        assert summary["submitted"] == 2 and summary["gallery"] == str(report)
        with Ledger.open(ledger_path, create=False) as ledger:
            for original in ("dunes", "cliffs"):
                take = ledger.get(f"{original}~t2")
                assert (take.state, take.take_of, take.row) == (
                    "done",
                    original,
                    ledger.get(original).row,
                )
                assert take.input["seed"] != ledger.get(original).input.get("seed")

    # the next report shows each new take right after its original
    with chromium() as browser:
        page = browser.new_page()
        page.goto(report.as_uri())
        page.wait_for_selector("body[data-ready=true]")
        order = shown(page)
        assert order.index("dunes~t2") == order.index("dunes") + 1
        assert order.index("cliffs~t2") == order.index("cliffs") + 1
        assert "re-roll of dunes" in page.locator('.card[data-id="dunes~t2"] .ids').inner_text()
