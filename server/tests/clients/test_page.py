"""The page at `/` in a real browser: Debian's Chromium, driven by Playwright, against a real mobilenet-serve. For
each task: upload a photo, run it, and check what is drawn (the top label, the boxes, the mask); a file that is not
an image must show the server's 4xx to the user. Screenshots go to target/ui-screenshots/ (the README's come from
there).

Needs Debian's `chromium` (`make test` installs it with apt when missing) and the release binary, as the other
client tests do. Playwright's own browser download is never used."""
import os
import pathlib
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import CLASSIFIER, DETECTOR, ROOT, SEGMENTER, images_dir, native

SCREENSHOTS = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "ui-screenshots"


@pytest.fixture(scope="module")
def page(server):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert pathlib.Path(chromium).is_file(), "Debian's chromium is missing: apt-get install chromium"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server["http"] + "/")
        expect(page.locator("#task option")).to_have_count(3)
        yield page
        browser.close()


def shoot(page, name):
    """A JPEG of the whole page: small enough for the README, which shows these."""
    page.screenshot(path=SCREENSHOTS / f"{name}.jpg", full_page=True, type="jpeg", quality=80)


def run(page, task, variant, image):
    page.select_option("#task", task)
    page.select_option("#variant", variant)
    page.set_input_files("#file", str(images_dir() / image))
    page.click("#run")


def test_classification_shows_the_top_class_as_the_api_gives_it(page, server):
    run(page, "classification", CLASSIFIER, "parrot.jpg")
    expected = native(server, f"/v1/classify?model={CLASSIFIER}&top_k=5", "parrot.jpg")["classes"][0]["label"]
    expect(page.locator("#classes li .label").first).to_have_text(expected)
    expect(page.locator("#timings")).to_be_visible()
    expect(page.locator("#answer-model")).to_contain_text(CLASSIFIER)
    shoot(page, "classification")


def test_detection_draws_every_box(page, server):
    run(page, "detection", DETECTOR, "cats_and_dogs.jpg")
    expected = native(server, f"/v1/detect?model={DETECTOR}", "cats_and_dogs.jpg")["detections"]
    assert expected, "the test image must have detections"
    expect(page.locator("#overlay")).to_have_attribute("data-boxes", str(len(expected)))
    expect(page.locator("#classes li")).to_have_count(len(expected))
    # The boxes are drawn: the overlay has coloured pixels.
    painted = page.evaluate("""() => {
        const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
    assert painted > 0
    shoot(page, "detection")


def test_segmentation_overlays_the_mask_with_a_legend(page, server):
    run(page, "segmentation", SEGMENTER, "segmentation_input_rotation0.jpg")
    expect(page.locator("#legend li").first).to_be_visible()
    answer = native(server, f"/v1/segment?model={SEGMENTER}", "segmentation_input_rotation0.jpg")
    expect(page.locator("#legend li")).to_have_count(len(answer["classes"]))
    mask = answer["mask"]
    objects = sum(n for v, n in zip(mask["values"], mask["lengths"]) if v != 0)
    assert objects > 0, "the test image must have a segmented object"
    expect(page.locator("#overlay")).to_have_attribute("data-mask-pixels", str(objects))
    expect(page.locator("#opacity-field")).to_be_visible()
    page.fill("#opacity", "90")
    page.dispatch_event("#opacity", "input")
    shoot(page, "segmentation")


def test_compare_runs_every_variant_of_the_task(page):
    run(page, "classification", CLASSIFIER, "burger.jpg")
    page.click("#compare")
    rows = page.locator("#comparison tbody tr")
    expect(rows).to_have_count(page.locator("#variant option").count() - 2)  # less "default" and "auto"
    expect(rows.first.locator("td").nth(2)).not_to_have_text("-")


def test_a_file_that_is_not_an_image_shows_the_servers_error(page, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page.select_option("#task", "classification")
    page.set_input_files("#file", str(text))
    page.click("#run")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("HTTP 415")
    expect(page.locator("#classes li")).to_have_count(0)


def test_the_page_is_usable_from_the_keyboard(page):
    page.reload()  # focus starts from the top of the page
    expect(page.locator("#task option")).to_have_count(3)
    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.dataset.sample"))
    assert order == ["file", "burger.jpg", "cats_and_dogs.jpg", "segmentation_input_rotation0.jpg", "task",
                     "variant"], order
    page.keyboard.press("End")  # the last variant of the list, chosen from the keyboard
    assert page.eval_on_selector("#variant", "e => e.value") == CLASSIFIER
    page.set_input_files("#file", str(images_dir() / "parrot.jpg"))
    expect(page.locator("#run")).to_be_enabled()
    page.focus("#run")
    page.keyboard.press("Enter")
    expect(page.locator("#classes li").first).to_be_visible()
    expect(page.locator("#error")).to_be_hidden()


def test_the_page_fits_a_phone(page):
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        run(page, "classification", CLASSIFIER, "cat_720p.jpg")
        expect(page.locator("#classes li").first).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than the phone"
        shoot(page, "phone")
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def test_a_bundled_sample_runs_without_a_file_of_ones_own(page, server):
    page.select_option("#task", "segmentation")
    page.click("#samples button[data-sample='burger.jpg']")
    # The sample picks the task it shows best, and the default variant.
    expect(page.locator("#task")).to_have_value("classification")
    expect(page.locator("#file-name")).to_have_text("burger.jpg")
    page.click("#run")
    expected = native(server, "/v1/classify?top_k=5", "burger.jpg")["classes"][0]["label"]
    expect(page.locator("#classes li .label").first).to_have_text(expected)
