"""The consumer portal in a real browser: Debian's Chromium, headless, driven by Selenium.

One consumer's whole journey (AUTH-5, AUTH-6): register with an invitation, copy the secret,
get a token with it, add a second secret, delete the first, and see the first refused at the
token endpoint; then sign out and in again, with keyboard use, the phone layout and the absence
of Content-Security-Policy violations checked on the way. Each page is saved as a screenshot in
test-artifacts/portal/ (git-ignored).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from portal_client import invitation
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from devtools.stack import DEMO_TENANTS

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "portal"
LAPTOP, PHONE = (1366, 900), (390, 844)

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="needs Debian's chromium and chromium-driver (scripts/setup installs them)")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="portal-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile}", f"--window-size={LAPTOP[0]},{LAPTOP[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


def screenshot(driver: WebDriver, folder: Path, name: str) -> None:
    """The whole page, not just the viewport: grow the window to the page's height, then restore it."""
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(height, full + 120))
    driver.save_screenshot(str(folder / f"{name}.png"))
    driver.set_window_size(width, height)


def wait_for(driver: WebDriver, by: str, value: str) -> Any:
    return WebDriverWait(driver, 10).until(expected_conditions.visibility_of_element_located((by, value)))


def text_of(driver: WebDriver, element_id: str) -> str:
    return wait_for(driver, By.ID, element_id).text.strip()


def submit_and_confirm(driver: WebDriver, button: Any) -> None:
    """Delete buttons ask first (portal.js); accept the browser's confirm dialog."""
    button.click()
    WebDriverWait(driver, 10).until(expected_conditions.alert_is_present()).accept()


def csp_violations(driver: WebDriver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]


def token_status(facts: dict[str, Any], client_id: str, secret: str, tenant_id: str) -> int:
    return requests.post(facts["token_url"], data={"grant_type": "client_credentials", "client_id": client_id,
                                                   "client_secret": secret, "scope": tenant_id}, timeout=30).status_code


def allow_on_demo_tenant(manage: Any, client_id: str) -> str:
    """The operator's step: add the new client to the STU3 demo tenant (read, change, write with If-Match)."""
    tenant_id = DEMO_TENANTS["stu3"]
    current = manage("GET", f"/tenants/{tenant_id}")
    body = current.json()
    body["allowed_clients"].append(client_id)
    updated = manage("PUT", f"/tenants/{tenant_id}", json=body, headers={"If-Match": current.headers["ETag"]})
    assert updated.status_code == 200, updated.text
    return tenant_id


def read_clipboard(driver: WebDriver) -> str | None:
    """What the copy button put on the clipboard (reading it back needs the permission granted here)."""
    origin = driver.execute_script("return location.origin")
    driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    return driver.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, () => done(null));")


def assertion_token_status(facts: dict[str, Any], client_id: str, key: Any, kid: str, tenant_id: str) -> int:
    """A SMART Backend Services token request signed with the key the consumer registered."""
    now = int(time.time())
    signed = jwt.encode({"iss": client_id, "sub": client_id, "aud": facts["token_url"], "exp": now + 120,
                         "jti": str(uuid.uuid4())}, key, algorithm="ES384", headers={"kid": kid})
    return requests.post(facts["token_url"], data={
        "grant_type": "client_credentials", "client_assertion": signed, "scope": tenant_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, timeout=30).status_code


def paste_jwks(driver: WebDriver, jwks: dict[str, Any]) -> None:
    field = wait_for(driver, By.ID, "jwks")
    field.clear()
    field.send_keys(json.dumps(jwks))
    driver.find_element(By.XPATH, "//button[normalize-space()='Register keys']").click()


def test_a_consumer_registers_rotates_its_secret_and_signs_in_again(
        browser: WebDriver, shots: Path, facts: dict[str, Any], manage: Any) -> None:
    driver, portal = browser, facts["portal_url"]
    code = invitation(manage, note="browser journey")

    # welcome -> register (keyboard: the skip link is the first stop, Enter submits the form)
    driver.get(portal)
    wait_for(driver, By.TAG_NAME, "h1")
    screenshot(driver, shots, "01-welcome")
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert driver.switch_to.active_element.text == "Skip to main content"
    driver.find_element(By.LINK_TEXT, "Register with an invitation code").click()
    wait_for(driver, By.ID, "invitation_code").send_keys(code)
    Select(driver.find_element(By.ID, "expires_in_days")).select_by_value("365")
    screenshot(driver, shots, "02-register")
    name = driver.find_element(By.ID, "name")
    name.send_keys("Contoso Patients app (browser test)")
    name.send_keys(Keys.ENTER)

    # shown once: client id and first secret, with copy buttons that really copy
    client_id, first = text_of(driver, "client-id"), text_of(driver, "new-secret")
    assert "only time it is shown" in driver.find_element(By.CSS_SELECTOR, ".notice.warning").text
    copy = driver.find_element(By.CSS_SELECTOR, 'button[data-copy="new-secret"]')
    copy.click()
    WebDriverWait(driver, 5).until(lambda d: copy.text != "Copy secret")
    assert read_clipboard(driver) == first, "the copy button copies exactly the secret"
    screenshot(driver, shots, "03-registered")
    assert first not in driver.current_url

    # the operator lets it use a tenant; the secret works at the token endpoint
    tenant_id = allow_on_demo_tenant(manage, client_id)
    assert token_status(facts, client_id, first, tenant_id) == 200

    # overview: tenants, endpoints, curl example (a placeholder, never the secret)
    driver.find_element(By.LINK_TEXT, "Continue to your client").click()
    wait_for(driver, By.ID, "curl-example")
    tenants = driver.find_element(By.CSS_SELECTOR, "section[aria-labelledby='tenants-heading']").text
    assert tenant_id in tenants and "Demo hospital (STU3)" in tenants and "STU3" in tenants
    assert text_of(driver, "token-url") == facts["token_url"]
    assert text_of(driver, "fhir-base-stu3") == facts["fhir_base_urls"]["stu3"]
    assert text_of(driver, "fhir-base-r4") == facts["fhir_base_urls"]["r4"]
    curl = text_of(driver, "curl-example")
    assert client_id in curl and tenant_id in curl and "<your client secret>" in curl and first not in curl
    screenshot(driver, shots, "04-overview")

    # secrets: the only live secret cannot be deleted, and the page says why
    driver.find_element(By.LINK_TEXT, "Secrets").click()
    rows = wait_for(driver, By.CSS_SELECTOR, "tbody").find_elements(By.TAG_NAME, "tr")
    assert len(rows) == 1 and first.split("~")[0] in rows[0].text and "live" in rows[0].text
    screenshot(driver, shots, "05-secrets")
    submit_and_confirm(driver, rows[0].find_element(By.CSS_SELECTOR, "button.danger"))
    refusal = wait_for(driver, By.CSS_SELECTOR, ".notice.error").text
    assert "last live secret" in refusal
    screenshot(driver, shots, "06-last-secret-refused")

    # add a second secret (shown once), then delete the first
    Select(driver.find_element(By.ID, "expires_in_days")).select_by_value("30")
    driver.find_element(By.XPATH, "//button[normalize-space()='Add secret']").click()
    second = text_of(driver, "new-secret")
    assert second != first
    screenshot(driver, shots, "07-secret-added")
    row = driver.find_element(By.XPATH, f"//tbody/tr[contains(., '{first.split('~')[0]}')]")
    submit_and_confirm(driver, row.find_element(By.CSS_SELECTOR, "button.danger"))
    # this session signed in (registered) with the first secret, so it ended with it: back to sign-in
    wait_for(driver, By.ID, "client_secret")
    assert driver.current_url.endswith("/api/portal/signin")
    screenshot(driver, shots, "08-session-ended-with-its-secret")

    # the deleted secret gets no token (this instance dropped it from its cache); the new one does
    assert token_status(facts, client_id, first, tenant_id) == 401
    assert token_status(facts, client_id, second, tenant_id) == 200

    # a wrong secret fails generically; the new secret signs in
    driver.find_element(By.ID, "client_id").send_keys(client_id)
    driver.find_element(By.ID, "client_secret").send_keys(first, Keys.ENTER)
    assert "Sign-in failed" in wait_for(driver, By.CSS_SELECTOR, ".notice.error").text
    screenshot(driver, shots, "09-signin-failed")
    driver.find_element(By.ID, "client_secret").send_keys(second, Keys.ENTER)
    assert text_of(driver, "client-id") == client_id
    assert driver.get_cookie("portal_session")["httpOnly"] is True
    assert all(first not in c["value"] and second not in c["value"] for c in driver.get_cookies())
    driver.find_element(By.LINK_TEXT, "Secrets").click()
    remaining = wait_for(driver, By.CSS_SELECTOR, "tbody").find_elements(By.TAG_NAME, "tr")
    assert len(remaining) == 1 and second.split("~")[0] in remaining[0].text
    screenshot(driver, shots, "10-secret-rotated")

    # SMART Backend Services: a pasted private key is refused naming the member; the public key is taken
    key = ec.generate_private_key(ec.SECP384R1())
    paste_jwks(driver, {"keys": [{**ECAlgorithm.to_jwk(key, as_dict=True), "kid": "browser-1"}]})
    refused = wait_for(driver, By.CSS_SELECTOR, ".notice.error").text
    assert "jwks.keys[0].d" in refused and "private key material" in refused
    assert '"kid": "browser-1"' in driver.find_element(By.ID, "jwks").get_attribute("value"), "kept to fix"
    paste_jwks(driver, {"keys": [{**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "browser-1"}]})
    assert "browser-1" in wait_for(driver, By.CSS_SELECTOR, ".notice.success").text
    assert "browser-1 (EC P-384)" in driver.find_element(By.CSS_SELECTOR, "ul.key-list").text
    screenshot(driver, shots, "10b-public-keys-registered")
    assert assertion_token_status(facts, client_id, key, "browser-1", tenant_id) == 200

    # a phone: no sideways scrolling, still every part reachable
    driver.set_window_size(*PHONE)
    for path, name in (("", "11-overview-phone"), ("/secrets", "12-secrets-phone")):
        driver.get(portal + path)
        wait_for(driver, By.TAG_NAME, "h1")
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: the page is {overflow}px wider than the phone"
        screenshot(driver, shots, name)
    driver.set_window_size(*LAPTOP)
    assert csp_violations(driver) == []

    # sign out ends the session
    driver.find_element(By.XPATH, "//button[normalize-space()='Sign out']").click()
    wait_for(driver, By.ID, "client_secret")
    assert driver.current_url.endswith("/api/portal/signin")
