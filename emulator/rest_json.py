"""Protobuf's JSON mapping for the HTTP/JSON port: a request message from a JSON body and
query parameters, refused in Google's words when they do not fit the message.

Google's front end answers bad input with INVALID_ARGUMENT and messages such as::

    Invalid JSON payload received. Unknown name "x" at 'queue': Cannot find field.
    Invalid JSON payload received. Unknown name "foo": Cannot bind query parameter. Field
      'foo' could not be found in request message.
    Invalid value at 'queue.rate_limits.max_dispatches_per_second' (TYPE_DOUBLE), "fast"
    Invalid JSON payload received. Unknown name "": Root element must be a message.

(recorded answers of Google APIs: google-gemini/gemini-cli#13972, googlecodelabs/feedback#441,
the "Cannot bind query parameter" answers quoted in demisto/content's Chronicle tests). Paths
name fields by their proto names, as Google's do. ``json_format`` does the parsing; only when
it refuses is the input walked again to say, in those words, what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from emulator.errors import invalid

PAYLOAD = "Invalid JSON payload received."
# Google's system parameters (cloud.google.com/apis/docs/system-parameters): they shape the
# answer or identify the caller, they are never request fields. A leading "$" is accepted too.
SYSTEM_PARAMETERS = frozenset({
    "alt", "prettyPrint", "key", "fields", "quotaUser", "callback", "upload_protocol",
    "uploadType", "access_token", "oauth_token", "userIp", ".xgafv", "xgafv", "trace",
    "requestReason", "userProject",
})
# Well-known messages written as one JSON string or number, so a query parameter may set them.
_SCALAR_MESSAGES = frozenset({
    "google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.FieldMask",
    *(f"google.protobuf.{t}Value" for t in (
        "Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")),
})
# Well-known messages whose JSON form is not an object of their fields.
_OPAQUE = _SCALAR_MESSAGES | {"google.protobuf.Any", "google.protobuf.Struct",
                              "google.protobuf.Value", "google.protobuf.ListValue"}
_TYPE_NAMES = {getattr(FieldDescriptor, n): n for n in dir(FieldDescriptor)
               if n.startswith("TYPE_")}


def is_system_parameter(name: str) -> bool:
    return name.removeprefix("$") in SYSTEM_PARAMETERS


def parse_body(raw: bytes) -> Any:
    """The body as JSON, or INVALID_ARGUMENT pointing at where it stops being JSON."""
    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise invalid(f"{PAYLOAD} The body is not UTF-8 text: {e.reason} at byte "
                      f"{e.start}.") from None
    except json.JSONDecodeError as e:
        line = e.doc.splitlines()[e.lineno - 1] if e.doc.splitlines() else ""
        raise invalid(f"{PAYLOAD} {e.msg} (line {e.lineno}, column {e.colno}).\n"
                      f"{line[:200]}\n{' ' * min(e.colno - 1, 200)}^") from None


def merge_json(js: Any, msg: Message) -> None:
    """Parse ``js`` (a JSON value) into ``msg``; INVALID_ARGUMENT in Google's words if it
    does not fit."""
    if not isinstance(js, dict):
        raise invalid(f'{PAYLOAD} Unknown name "": Root element must be a message.')
    try:
        json_format.ParseDict(js, msg)
    except (json_format.ParseError, ValueError, TypeError) as e:
        problems = _problems(js, msg.DESCRIPTOR, "")
        raise invalid("\n".join(problems) if problems else f"{PAYLOAD} {e}") from None


def bind_query(params: Iterable[tuple[str, str]], desc: Descriptor,
               body: str) -> dict[str, Any]:
    """The request fields that query parameters set, as JSON; system parameters skipped.

    ``body`` is the rule's body field: with "*" no field can be bound from the query, and
    the body's own field never is (Google's http.proto rules)."""
    out: dict[str, Any] = {}
    for key, value in params:
        if is_system_parameter(key):
            continue
        target, d = out, desc
        parts = key.split(".")
        for i, part in enumerate(parts):
            field = _fields(d).get(part)
            if field is None or (i == 0 and (body == "*" or field.name == body)):
                raise invalid(f'{PAYLOAD} Unknown name "{key}": Cannot bind query parameter. '
                              f"Field '{part}' could not be found in request message.")
            message = field.type == FieldDescriptor.TYPE_MESSAGE
            last = i == len(parts) - 1
            if last and (not message or field.message_type.full_name in _SCALAR_MESSAGES):
                _put(target, field, _query_value(field, value))
            elif last or not message or _repeated(field) or \
                    field.message_type.full_name in _OPAQUE:
                raise invalid(f'{PAYLOAD} Unknown name "{key}": Cannot bind query parameter. '
                              f"'{'.'.join(parts[:i + 1])}' is a message type. Parameters can "
                              "only be bound to primitive types.")
            else:
                target = target.setdefault(field.json_name, {})
                d = field.message_type
    return out


def set_path(msg: Message, path: str, value: str) -> None:
    """Set the string field at dotted ``path`` (a path template's variable)."""
    *parents, leaf = path.split(".")
    for name in parents:
        msg = getattr(msg, name)
    setattr(msg, leaf, value)


def check_path(desc: Descriptor, path: str) -> None:
    """Raise ValueError unless ``path`` names a string field of ``desc`` (a rule's check)."""
    *parents, leaf = path.split(".")
    for name in parents:
        desc = desc.fields_by_name[name].message_type
    if desc.fields_by_name[leaf].type != FieldDescriptor.TYPE_STRING:
        raise ValueError(f"{desc.full_name}.{leaf} is not a string field")


@cache
def _fields(desc: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by proto name and by JSON name (JSON takes both)."""
    return {**{f.name: f for f in desc.fields}, **{f.json_name: f for f in desc.fields}}


def _repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _put(target: dict[str, Any], field: FieldDescriptor, value: Any) -> None:
    if _repeated(field):
        target.setdefault(field.json_name, []).append(value)
    else:
        target[field.json_name] = value


def _query_value(field: FieldDescriptor, value: str) -> Any:
    kind = field.message_type.full_name if field.message_type else ""
    if field.type == FieldDescriptor.TYPE_BOOL or kind == "google.protobuf.BoolValue":
        return {"true": True, "false": False}.get(value, value)
    if kind == "google.protobuf.FieldMask":
        # JSON writes masks in lowerCamelCase; a snake_case path is taken as well.
        return ",".join(_camel(p) for p in value.split(",") if p)
    return value


def _camel(path: str) -> str:
    return ".".join(p.split("_")[0] + "".join(w[:1].upper() + w[1:] for w in p.split("_")[1:])
                    for p in path.split("."))


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return f"type.googleapis.com/{field.message_type.full_name}"
    if field.enum_type is not None:
        return f"type.googleapis.com/{field.enum_type.full_name}"
    return _TYPE_NAMES.get(field.type, "TYPE_UNKNOWN")


def _problems(js: dict[str, Any], desc: Descriptor, path: str) -> list[str]:
    """What in ``js`` does not fit ``desc``, each in Google's words."""
    out: list[str] = []
    at = f" at '{path}'" if path else ""
    for key, value in js.items():
        field = _fields(desc).get(key)
        if field is None:
            out.append(f'{PAYLOAD} Unknown name "{key}"{at}: Cannot find field.')
            continue
        if value is None:
            continue
        where = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if not isinstance(value, dict):
                out.append(_invalid_value(where, field, value))
                continue
            for k, v in value.items():
                out += _value_problems(v, value_field, f"{where}[{json.dumps(k)}]")
        elif _repeated(field):
            if not isinstance(value, list):
                out.append(_invalid_value(where, field, value))
                continue
            for i, v in enumerate(value):
                out += _value_problems(v, field, f"{where}[{i}]")
        elif isinstance(value, list):
            out.append(f'{PAYLOAD} Unknown name "{key}"{at}: Proto field is not repeating, '
                       "cannot start list.")
        else:
            out += _value_problems(value, field, where)
    return out


def _value_problems(value: Any, field: FieldDescriptor, where: str) -> list[str]:
    """What is wrong with one value of ``field`` (an element, for a repeated one)."""
    if field.message_type is not None and field.message_type.full_name not in _OPAQUE:
        if not isinstance(value, dict):
            return [_invalid_value(where, field, value)]
        return _problems(value, field.message_type, where)
    # A scalar, an enum or a well-known type: parse it alone to learn whether it fits.
    holder = message_factory.GetMessageClass(field.containing_type)()
    try:
        json_format.ParseDict({field.name: [value] if _repeated(field) else value}, holder)
    except (json_format.ParseError, ValueError, TypeError):
        return [_invalid_value(where, field, value)]
    return []


def _invalid_value(where: str, field: FieldDescriptor, value: Any) -> str:
    return f"Invalid value at '{where}' ({_type_name(field)}), {json.dumps(value)[:200]}"
