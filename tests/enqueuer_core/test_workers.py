"""The registry: built-in workers, a workers file, payload schemas."""

from __future__ import annotations

import json

import pytest

from enqueuer_core.config import load_settings
from enqueuer_core.errors import ConfigError, InvalidRequest, UnknownService
from enqueuer_core.workers import load_registry

BRAIN_OK = {"system_instructions_doc_id": "a", "base_prompt_doc_id": "b", "input_doc_id": "c",
            "output_doc_id": "d"}


def settings(**kw):
    return load_settings(cloud_tasks_emulator_host="127.0.0.1:1", **kw)


def test_builtin_workers():
    reg = load_registry(settings())
    assert [w.name for w in reg] == ["brain", "testimonios", "transcripciones"]
    brain = reg.get("brain")
    assert (brain.queue, brain.deadline_s) == ("queue-brain", 700)
    brain.check_payload(BRAIN_OK)
    reg.get("testimonios").check_payload({"anything": [1, 2]})


def test_brain_requires_its_four_doc_ids():
    brain = load_registry(settings()).get("brain")
    with pytest.raises(InvalidRequest) as e:
        brain.check_payload({"input_doc_id": "c"})
    for field in ("system_instructions_doc_id", "base_prompt_doc_id", "output_doc_id"):
        assert field in e.value.message


def test_payload_must_be_an_object():
    with pytest.raises(InvalidRequest, match="JSON object"):
        load_registry(settings()).get("testimonios").check_payload([1])


def test_unknown_service_lists_the_valid_ones():
    with pytest.raises(UnknownService) as e:
        load_registry(settings()).get("brian")
    assert "brain, testimonios, transcripciones" in e.value.message


def test_workers_file_adds_and_extends(tmp_path):
    (tmp_path / "resumen.json").write_text(json.dumps({
        "type": "object", "required": ["doc"], "properties": {"doc": {"type": "string"}}}))
    f = tmp_path / "workers.toml"
    f.write_text("""
[workers.resumenes]
url = "https://resumenes-abc.a.run.app/summarize"
deadline_s = 300
description = "Summaries"
schema_file = "resumen.json"
example = { doc = "1x" }

[workers.testimonios]
schema = { type = "object", required = ["person"], properties = { person = { type = "string" } } }
""")
    reg = load_registry(settings(workers_file=f))
    r = reg.get("resumenes")
    assert (r.queue, r.audience, r.deadline_s) == (
        "queue-resumenes", "https://resumenes-abc.a.run.app", 300)
    r.check_payload({"doc": "1"})
    with pytest.raises(InvalidRequest, match="'doc' is a required property"):
        r.check_payload({})
    testi = reg.get("testimonios")
    assert testi.url == "http://127.0.0.1:8082/generate-testimony"  # kept from the settings
    with pytest.raises(InvalidRequest, match="person"):
        testi.check_payload({})


@pytest.mark.parametrize(("toml", "needle"), [
    ('[workers.x]\ndescription = "no url"\n', "needs `url`"),
    ('[workers.x]\nurl = "https://x.run.app/a"\naudience = "https://x.run.app/a"\n',
     "scheme and host only"),
    ('[workers.x]\nurl = "https://x.run.app/a"\ndeadline_s = 5000\n', "deadline_s"),
    ('[workers.x]\nurl = "https://x.run.app/a"\nschema = { type = 12 }\n', "schema is not valid"),
    ('[workers.x]\nurl = "https://x.run.app/a"\nexample = [1]\n', "example"),
    ('[workers.x]\nurl = "https://x.run.app/a"\ncolour = "red"\n', "colour"),
    ("not toml [", "not valid TOML"),
])
def test_bad_workers_file_is_refused(tmp_path, toml, needle):
    f = tmp_path / "w.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=needle):
        load_registry(settings(workers_file=f))


def test_each_registry_checks_payloads_with_its_own_schema(tmp_path):
    """Validators are built once per worker: a registry loaded after the workers file changed
    refuses with the new schema, saying the same as a fresh one would."""
    path = tmp_path / "workers.toml"
    path.write_text('[workers.testimonios]\nschema = { type = "object", required = ["doc"] }\n')
    before = load_registry(settings(workers_file=path)).get("testimonios")
    with pytest.raises(InvalidRequest) as first:
        before.check_payload({"audio": "a"})
    assert first.value.message == ("payload for testimonios does not match its schema: "
                                   "payload: 'doc' is a required property")
    path.write_text('[workers.testimonios]\nschema = { type = "object", required = ["audio"] }\n')
    after = load_registry(settings(workers_file=path)).get("testimonios")
    after.check_payload({"audio": "a"})
    with pytest.raises(InvalidRequest, match="'audio' is a required property"):
        after.check_payload({"doc": "d"})
    with pytest.raises(InvalidRequest) as again:  # the first registry keeps its own schema
        before.check_payload({"audio": "a"})
    assert again.value.message == first.value.message


@pytest.mark.parametrize("schema", ['{ type = "object" }',
                                    '{ type = "object", maxProperties = 1 }'])
def test_any_object_schemas_take_every_object_and_nothing_else(tmp_path, schema):
    path = tmp_path / "workers.toml"
    path.write_text(f"[workers.testimonios]\nschema = {schema}\n")
    worker = load_registry(settings(workers_file=path)).get("testimonios")
    worker.check_payload({"a": 1})
    with pytest.raises(InvalidRequest, match="must be a JSON object, not list"):
        worker.check_payload([1])
    if "maxProperties" in schema:  # not the schema of any object: still applied
        with pytest.raises(InvalidRequest, match="does not match its schema"):
            worker.check_payload({"a": 1, "b": 2})
    else:
        worker.check_payload({"a": 1, "b": [None, {"c": 2.5}]})
