"""The API keeps the contract its OpenAPI document states: Schemathesis, every check, against
the running API (real uvicorn on the emulator, an operator's token), and the document itself as
a client generator reads it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from app import KEY_PATTERN, create_app
from enqueuer_core.build import MAX_SCHEDULE_S
from enqueuer_core.config import load_settings
from enqueuer_core.task_names import MAX_KEY_CHARS, check_key
from enqueuer_core.workers import BRAIN_FIELDS
from tests.emulator.harness import RunningEmulator
from tests.test_api_auth import OPERATOR, Door, door
from tests.test_app import CALLER_SA, PROJECT, REGION

SEED = 20261202  # one seed, so that a failure shows up again on the next run
CONFIG = {"seed": SEED,
          "generation": {"mode": "all", "max-examples": 50, "deterministic": True}}


def document() -> dict:
    """The document of an API on the emulator with the built-in workers, as the test's API
    serves it (``test_the_served_document_is_the_one_tested`` makes sure). Built here, without
    a server, because Schemathesis's lazy loader (``schemathesis.pytest.from_fixture``) fails
    on pytest 9 (it reads ``request.node._nodeid``, gone); no emulator is needed to build it."""
    settings = load_settings(cloud_tasks_emulator_host="127.0.0.1:9",
                             emulator_http_url="http://127.0.0.1:9", project_id=PROJECT,
                             tasks_region=REGION, caller_sa=CALLER_SA)
    return create_app(settings).openapi()


DOCUMENT = document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict(CONFIG))
load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())  # what `--checks all` runs


@pytest.fixture(scope="module")
def api(emulator: RunningEmulator) -> Iterator[Door]:
    with door(emulator, "http://127.0.0.1:9", paused=True) as d:
        yield d


@pytest.fixture(scope="module")
def operator(api: Door) -> dict[str, str]:
    return api.auth(OPERATOR)


@pytest.mark.timeout(60)
@schema.parametrize()
@settings(deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_documented_contract(case, api, operator):
    # Every check: no 5xx, only documented statuses and shapes, schema-valid requests taken
    # (200, or 409 for a key drawn twice), invalid ones refused, the token's absence refused.
    case.call_and_validate(base_url=api.url, headers=operator, checks=ALL_CHECKS, timeout=20)


def test_the_served_document_is_the_one_tested(api):
    assert httpx.get(api.url + "/openapi.json", timeout=10).json() == DOCUMENT


# -- the document, as a client generated from it sees it --------------------------------------


@pytest.fixture(scope="module")
def doc(api: Door) -> dict:
    return httpx.get(api.url + "/openapi.json", timeout=10).json()


def test_each_worker_is_a_branch_of_the_request_with_its_own_payload(doc):
    schemas = doc["components"]["schemas"]
    request = schemas["EnqueueRequest"]
    assert request["discriminator"] == {"propertyName": "service", "mapping": {
        "brain": "#/components/schemas/BrainJob",
        "testimonios": "#/components/schemas/TestimoniosJob",
        "transcripciones": "#/components/schemas/TranscripcionesJob"}}
    assert request["oneOf"] == [{"$ref": ref} for ref in
                                request["discriminator"]["mapping"].values()]
    body = doc["paths"]["/enqueue"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EnqueueRequest"}
    brain = schemas["BrainJob"]
    assert brain["additionalProperties"] is False
    assert brain["required"] == ["service", "payload"]
    assert brain["properties"]["service"]["enum"] == ["brain"]
    assert brain["properties"]["payload"] == {"$ref": "#/components/schemas/BrainPayload"}
    # A client generated from the document knows brain's four fields.
    payload = schemas["BrainPayload"]
    assert sorted(payload["required"]) == sorted(BRAIN_FIELDS)
    assert sorted(payload["properties"]) == sorted(BRAIN_FIELDS)
    assert schemas["TestimoniosPayload"]["type"] == "object"  # no schema: any object
    schedule, key = (brain["properties"][f]["anyOf"][0] for f in ("schedule_in_s",
                                                                  "idempotency_key"))
    assert (schedule["minimum"], schedule["maximum"]) == (0, MAX_SCHEDULE_S)
    assert (key["minLength"], key["maxLength"], key["pattern"]) == (1, MAX_KEY_CHARS,
                                                                    KEY_PATTERN)


def refused(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def test_the_key_pattern_refuses_exactly_what_the_api_refuses():
    pattern = re.compile(KEY_PATTERN.replace("$", r"\Z"))  # JSON Schema's `$` is the end
    for c in [chr(i) for i in range(0x300)] + ["\u2028", "\ufeff", "ñ", "✓", "\U0001f600"]:
        for key in (c, f"a{c}b", f"ab{c}"):
            assert bool(pattern.search(key)) == refused(key), repr(key)


def test_the_documented_request_schema_is_the_one_the_api_applies(doc, api):
    """Requests the document calls valid are taken, and invalid ones refused (a few by hand,
    beside what Schemathesis draws)."""
    resolver = jsonschema.validators.Draft202012Validator(
        {"$ref": "#/components/schemas/EnqueueRequest", **{"components": doc["components"]}})
    brain = {f: "doc" for f in BRAIN_FIELDS}
    cases = [
        ({"service": "brain", "payload": brain}, True),
        ({"service": "brain", "payload": brain | {"extra": 1}}, True),
        ({"service": "brain", "payload": {"input_doc_id": "x"}}, False),
        ({"service": "testimonios", "payload": {}, "schedule_in_s": 2.5,
          "idempotency_key": "pedido 42 / ñandú ✓"}, True),
        ({"service": "testimonios", "payload": {}, "schedule_in_s": -1}, False),
        ({"service": "testimonios", "payload": {}, "idempotency_key": "a\tb"}, False),
        ({"service": "testimonios", "payload": {}, "idempotency_key": "k" * 501}, False),
        ({"service": "testimonios", "payload": {}, "more": True}, False),
        ({"service": "brian", "payload": {}}, False),
    ]
    for body, valid in cases:
        assert resolver.is_valid(body) is valid, body
        r = httpx.post(api.url + "/enqueue", content=json.dumps(body),
                       headers={**api.auth(), "Content-Type": "application/json"}, timeout=20)
        assert (r.status_code in (200, 409)) is valid, (body, r.text)
        if not valid:
            assert r.status_code == 422, r.text


def test_every_status_the_api_answers_is_documented_with_examples(doc):
    statuses = {path: set(op["responses"]) for path, ops in doc["paths"].items()
                for op in ops.values()}
    assert statuses == {
        "/enqueue": {"200", "401", "403", "409", "413", "422", "502", "503"},
        "/workers": {"200", "401", "403", "503"},
        "/healthz": {"200"},
        "/readyz": {"200", "503"},
    }
    enqueue = doc["paths"]["/enqueue"]["post"]["responses"]
    assert set(enqueue["403"]["content"]["application/json"]["examples"]) == {
        "forbidden", "permission_denied"}
    assert set(enqueue["503"]["content"]["application/json"]["examples"]) == {
        "unavailable", "certs_unavailable"}
    assert "WWW-Authenticate" in enqueue["401"]["headers"]
    for path in ("/enqueue", "/workers"):
        assert next(iter(doc["paths"][path].values()))["security"] == [{"googleIdToken": []}]
    scheme = doc["components"]["securitySchemes"]["googleIdToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
