"""schemathesis hooks for quotecast (SCHEMATHESIS_HOOKS, set by
scripts/schemathesis.sh).

Alert bodies may carry a `webhook_url`, and an alert with one POSTs to it
whenever it fires. Generated URLs are arbitrary: one could name a public
address, and the run must never send traffic off this machine. So every
generated `webhook_url` that the document would accept is left out of the
body (it is optional), and no alert of the run ever has a webhook. Values the
document would refuse are kept, so negative cases stay negative.
Webhook delivery has its own tests (tests/alerts.rs) against a receiver on
loopback.
"""

import re

import schemathesis

ACCEPTABLE = re.compile(r"^\s*https?://", re.IGNORECASE)


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict):
        url = body.get("webhook_url")
        if isinstance(url, str) and ACCEPTABLE.match(url) and len(url) <= 2048:
            body = {k: v for k, v in body.items() if k != "webhook_url"}
    return body
