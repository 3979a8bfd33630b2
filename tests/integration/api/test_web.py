"""The web page in a real browser (headless chromium through chromedriver) against the real API:
key entry, the list of stored circuits, one circuit drawn with its edge table, and the comparison
of two circuits showing the API's Jaccard. Skipped, saying why, where chromium cannot run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.integration.api.conftest import READ_KEY

WAIT_S = 30


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless chromium, or a skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(it is in the dev extra: make setup)")
    from selenium.common.exceptions import WebDriverException

    driver_path, chromium = shutil.which("chromedriver"), shutil.which("chromium")
    if not driver_path or not chromium:
        pytest.skip("chromium and chromedriver are not installed: `make browser` or "
                    "apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    except WebDriverException as exc:
        pytest.skip(f"chromium did not start: {exc.msg}")
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def _wait(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d))


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _use_key(driver, key: str) -> None:
    field = _css(driver, "#api-key")[0]
    field.clear()
    field.send_keys(key)
    _css(driver, "#key-form button")[0].click()


def test_page_lists_draws_and_compares(browser, server, reader, stored):
    driver = browser
    ioi, other = stored["ioi"], stored["greater_than"]
    driver.get(server.url + "/")
    _use_key(driver, "wrong-key")
    _wait(driver, lambda d: "401" in _css(d, "#status")[0].text)
    assert "unknown API key" in _css(driver, "#status")[0].text

    _use_key(driver, READ_KEY)
    model = _css(driver, "#filters input[name=model]")[0]
    model.send_keys(ioi.provenance.model)
    _css(driver, "#filters button")[0].click()
    # The rows of the filtered list (not those of the list shown when the key was entered).
    _wait(driver, lambda d: "model=" in (_css(d, "#circuits tbody")[0].get_attribute("data-query") or ""))
    rows = {r.get_attribute("data-id"): r for r in _css(driver, "#circuits tbody tr")}
    assert set(rows) == {ioi.id, other.id}
    cells = [c.text for c in rows[ioi.id].find_elements("css selector", "td")]
    m = ioi.metrics
    assert cells[1:8] == [ioi.provenance.model, "ioi", "acdc", f"{m.faithfulness_task:.3f} ({m.name})",
                          f"{m.faithfulness_search:.3f} (kl)", str(len(ioi.nodes)), str(len(ioi.edges))]
    headers = [h.text for h in _css(driver, "#circuits thead th")]
    assert headers[4:6] == ["faithfulness (task metric)", "faithfulness (search metric)"]

    _css(driver, "#filters select[name=sort] option[value=faithfulness_search]")[0].click()
    _css(driver, "#filters button")[0].click()
    _wait(driver, lambda d: "sort=faithfulness_search" in (_css(d, "#circuits tbody")[0].get_attribute("data-query") or ""))
    shown = [r.get_attribute("data-id") for r in _css(driver, "#circuits tbody tr")]
    best_first = sorted((ioi, other), key=lambda c: -c.metrics.faithfulness_search)
    assert shown == [c.id for c in best_first]
    rows = {r.get_attribute("data-id"): r for r in _css(driver, "#circuits tbody tr")}

    rows[ioi.id].click()
    _wait(driver, lambda d: _css(d, "#drawing svg") and len(_css(d, "#edges tbody tr")) == len(ioi.edges))
    assert _css(driver, "#circuit-title")[0].text == f"{ioi.provenance.model} / ioi / acdc"
    facts = _css(driver, "#circuit-facts")[0].text
    assert f"task metric {m.faithfulness_task:.3f} ({m.name})" in facts
    assert f"search metric {m.faithfulness_search:.3f} (kl)" in facts
    edge_rows = [[c.text for c in r.find_elements("css selector", "td")] for r in _css(driver, "#edges tbody tr")]
    assert [(s, d, i) for s, d, i, *_ in edge_rows] == [(e.src, e.dst, e.input) for e in ioi.edges]
    assert len(_css(driver, "#nodes tbody tr")) == len(ioi.nodes)
    assert _css(driver, "#drawing svg")[0].size["height"] > 100  # drawn, not an empty element

    for circuit_id in (ioi.id, other.id):
        rows[circuit_id].find_element("css selector", "input[type=checkbox]").click()
    _css(driver, "#compare-button")[0].click()
    _wait(driver, lambda d: _css(d, "#edge-jaccard")[0].get_attribute("data-value"))
    expected = reader.get("/v1/compare", params={"ids": f"{ioi.id},{other.id}"}).json()
    shown = _css(driver, "#edge-jaccard")[0]
    assert float(shown.get_attribute("data-value")) == expected["edge_jaccard"]
    assert shown.text == f"{expected['edge_jaccard']:.4f}"
    assert float(_css(driver, "#node-jaccard")[0].get_attribute("data-value")) == expected["node_jaccard"]
    assert _css(driver, "#edges-shared")[0].text == str(expected["edges_shared"])
    assert not _css(driver, "#circuit-view")[0].is_displayed()


def test_page_and_assets_are_served_without_a_key(anonymous):
    page = anonymous.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/web/app.js"' in page.text and "http" not in page.text.split("<body>")[0]
    script = anonymous.get("/web/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "X-API-Key" in script.text
    assert anonymous.get("/web/app.css").headers["content-type"].startswith("text/css")
    assert anonymous.get("/web/../main.py").status_code == 404
    assert anonymous.get("/web/index.py").status_code == 422


def test_circuit_view_draws_its_faithfulness_curve(browser, server, stored, neo4j_driver, settings):
    """A circuit stored with its curve shows it as a chart (a point per share, CPR/CMD in the
    title); one without says so. The curve is a real one, measured on held-out prompts."""
    import dataclasses

    from discovery.curves import held_out_curve
    from discovery.discover import DiscoveryRequest
    from discovery.models import load_model
    from graphstore.store import delete_circuit, write_circuit

    plain = stored["ioi"]
    request = DiscoveryRequest(model="multitask", task="ioi", n_prompts=8, device="cpu")
    curve = held_out_curve(load_model("multitask", device="cpu"), request, plain.edge_scores,
                           (0.01, 0.1, 0.5, 1.0))
    with_curve = dataclasses.replace(plain, id=plain.id + ".curve", curve=curve.to_dict())
    write_circuit(neo4j_driver, with_curve, database=settings.neo4j_database)
    try:
        driver = browser
        driver.get(server.url + "/")
        _use_key(driver, READ_KEY)
        driver.execute_script("openCircuit(arguments[0])", with_curve.id)
        _wait(driver, lambda d: _css(d, "#curve svg circle"))
        points = _css(driver, "#curve svg circle")
        assert [round(float(p.get_attribute("data-y")), 6) for p in points] == [
            round(p.faithfulness, 6) for p in curve.points]
        title = _css(driver, "#curve svg .chart-title")[0].text
        assert f"CPR {curve.cpr:.3f}" in title and f"CMD {curve.cmd:.3f}" in title
        driver.execute_script("openCircuit(arguments[0])", plain.id)
        _wait(driver, lambda d: "No faithfulness curve" in _css(d, "#curve")[0].text)
        assert not _css(driver, "#curve svg")
    finally:
        delete_circuit(neo4j_driver, with_curve.id, database=settings.neo4j_database)


def test_circuit_view_shows_its_stability_and_core(browser, server, stored, neo4j_driver, settings):
    """A circuit stored with a real stability score shows its Jaccards and core, and each edge's
    share of re-runs keeping it; one without says so."""
    import dataclasses

    from discovery.discover import DiscoveryRequest
    from discovery.models import load_model
    from discovery.stability import stability
    from graphstore.store import delete_circuit, write_circuit

    plain = stored["ioi"]
    request = DiscoveryRequest(model="multitask", task="ioi", method="acdc", device="cpu")  # the fixture's
    score = stability(request, plain, orders=1, resamples=1, model=load_model("multitask", device="cpu"))
    scored = dataclasses.replace(plain, id=plain.id + ".stability", stability=score)
    write_circuit(neo4j_driver, scored, database=settings.neo4j_database)
    try:
        driver = browser
        driver.get(server.url + "/")
        _use_key(driver, READ_KEY)
        driver.execute_script("openCircuit(arguments[0])", scored.id)
        _wait(driver, lambda d: "Stability" in _css(d, "#stability")[0].text)
        text = _css(driver, "#stability")[0].text
        assert f"Jaccard {score['orders']['jaccard_mean']:.3f}" in text
        assert f"core {len(score['core'])} of {score['edges']} edges" in text
        rows = {tuple(c.text for c in r.find_elements("css selector", "td")[:3]): r.find_elements("css selector", "td")[4].text
                for r in _css(driver, "#edges tbody tr")}
        for e in plain.edges:
            assert rows[(e.src, e.dst, e.input)] == f"{int(100 * score['edge_share'][e.name] + 0.5)}%"  # as Math.round
        driver.execute_script("openCircuit(arguments[0])", plain.id)
        _wait(driver, lambda d: "No stability score" in _css(d, "#stability")[0].text)
    finally:
        delete_circuit(neo4j_driver, scored.id, database=settings.neo4j_database)
