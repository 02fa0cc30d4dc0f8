"""Screenshots of each demo tab for the README, with the models in `saved_models/`.

    python scripts/screenshots.py [--out docs/screenshots] [--width 1100]

Serves `python -m apps` on a free local port, drives Debian's Chromium (`/usr/bin/chromium`)
through Playwright, uses each tab once and saves one small PNG per tab.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHROMIUM = "/usr/bin/chromium"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("docs", "screenshots"))
    parser.add_argument("--width", type=int, default=1100, help="browser width in pixels (default 1100)")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from apps import __main__ as all_demos
    from apps import common

    models = all_demos.load_all()
    available = {name for name, model in models.items() if not isinstance(model, common.Unavailable)}
    demo = all_demos.build(models)
    url = common.start_local(demo)
    os.makedirs(args.out, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": args.width, "height": 800})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_selector("text=rnn-suite")

        page.get_by_role("tab", name="Translate").click()
        page.get_by_label("Text", exact=True).fill("¿Dónde está la estación de tren más cercana?")
        page.get_by_role("button", name="Translate", exact=True).click()
        page.locator(".js-plotly-plot g.hm image").first.wait_for()
        page.wait_for_timeout(500)
        shot(page, args.out, "translate")

        page.get_by_role("tab", name="Sentiment").click()
        page.get_by_label("Movie review").fill("The first half drags, but the last act is superb and the music is "
                                               "wonderful. A flawed film I will happily watch again.")
        page.get_by_role("button", name="Classify").click()
        page.locator("[data-testid='highlighted-text']").get_by_text("superb").first.wait_for()
        shot(page, args.out, "sentiment")

        if "Generate" in available:
            page.get_by_role("tab", name="Generate").click()
            page.get_by_role("button", name="Generate").click()
            output = page.get_by_label("Text", exact=True).last
            page.wait_for_function("el => el.value.length > 380", arg=output.element_handle())
            page.wait_for_timeout(500)
            shot(page, args.out, "generate")

        page.get_by_role("tab", name="Gradients").click()
        page.get_by_role("button", name="Measure").click()
        page.get_by_text("a factor of").first.wait_for()
        shot(page, args.out, "gradients")
        browser.close()
    demo.close()


def shot(page, folder, name):
    """A viewport screenshot, re-encoded as a small 256-colour PNG."""
    path = os.path.join(folder, f"{name}.png")
    page.screenshot(path=path, full_page=False)
    try:
        from PIL import Image

        image = Image.open(path).convert("RGB")
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4))
        image.quantize(colors=128).save(path, optimize=True)
    except ImportError:
        pass
    print(f"{path}: {os.path.getsize(path) // 1024} KiB")


if __name__ == "__main__":
    main()
