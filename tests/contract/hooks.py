"""schemathesis hooks for scripts/contract: they make the generated calls reach facepair's core.

- a login's scan_ref is made known to the iDenfy simulator before the login is created;
- the code of a created attempt is finished in the simulator's phone app (approved, failed or
  canceled), so iDenfy's webhook moves the login and later calls meet every state;
- the webhook body is signed with the simulator's key, as iDenfy signs it;
- an event endpoint the run creates is disabled at once: its URL was generated, and the
  sandbox (which allows private addresses) must not push events to it.
"""
import hashlib
import hmac
import json
import os
import random

import requests
import schemathesis

SIM = os.environ["FACEPAIR_SIM_URL"]
FACEPAIR = os.environ["FACEPAIR_URL"]
API_KEY = os.environ["FACEPAIR_DEV_API_KEY"]
SIGNING_KEY = os.environ["FACEPAIR_DEV_SIGNING_KEY"].encode()
OUTCOMES = ["SUCCESS", "SUCCESS", "FAILED", "CANCELED", None]
# the phone's answers are drawn from a fixed seed, so a run can be repeated
draw = random.Random(int(os.environ.get("FACEPAIR_CONTRACT_SEED", "1")))


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    label = case.operation.label
    # a long poll may wait 60 s: a second is enough to see it answer
    if isinstance(case.query, dict) and isinstance(case.query.get("wait"), int) and case.query["wait"] > 1:
        case.query["wait"] = 1
    if label == "POST /v1/logins" and isinstance(case.body, dict):
        scan_ref = case.body.get("scan_ref")
        if isinstance(scan_ref, str) and 1 <= len(scan_ref) <= 40:
            requests.post(f"{SIM}/_sim/scan-refs", json={"scanRef": scan_ref}, timeout=5)
    elif label == "POST /v1/webhooks/idenfy":
        if type(case.body).__name__ == "NotSet":
            raw = b""
        else:
            raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
            case.body = raw
        case.headers = dict(case.headers or {})
        case.headers["Idenfy-Signature"] = hmac.new(SIGNING_KEY, raw, hashlib.sha256).hexdigest()


@schemathesis.hook
def after_call(ctx, case, response):
    if response.status_code != 201:
        return
    if case.operation.label == "POST /v1/event-endpoints":
        endpoint = response.json()["id"]
        requests.post(
            f"{FACEPAIR}/v1/event-endpoints/{endpoint}/disable",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=5,
        )
        return
    try:
        code = response.json()["attempt"]["digit_string"]
    except (ValueError, KeyError, TypeError):
        return
    outcome = draw.choice(OUTCOMES)
    if code and outcome:
        requests.post(f"{SIM}/_sim/app/enter", json={"digitString": code, "status": outcome}, timeout=5)
