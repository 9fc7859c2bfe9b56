"""A Streamlit form generated from a payload's JSON Schema, with errors shown at each field.

``SchemaForm(schema, prefix, prefill).render()`` draws one widget per property (recursing
into nested objects) and returns the payload the widgets hold; ``show_errors`` then puts
jsonschema's errors under the fields they are about (by their paths), after the fact,
through a placeholder left under each field.

| schema | widget |
|---|---|
| ``enum`` | selectbox (a blank choice when optional) |
| boolean | checkbox (required or with a default), else a yes / no / blank selectbox |
| integer, number | number_input (blank allowed), minimum/maximum as bounds |
| string | text_input; text_area when long (maxLength > 200) or ``format: textarea`` |
| array of enum values | multiselect |
| array of strings, numbers, booleans | text_area, one item per line |
| array of anything else, object without properties, anyOf/oneOf/... | text_area of JSON |
| object with properties | a bordered container, one field per property |

Empty optional fields are left out of the payload; an empty required field too, so that the
schema says it is required, at that field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import jsonschema
import streamlit as st

Path = tuple[str | int, ...]
OMIT = object()  # a field left empty: not in the payload
_BLANK = "—"
_PRIMITIVES = {"string", "integer", "number", "boolean"}


def _kind(schema: dict[str, Any]) -> str | None:
    if "enum" in schema:
        return "enum"
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    if t is None:
        if "properties" in schema:
            return "object"
        if "items" in schema:
            return "array"
    return t


def field_key(prefix: str, path: Path) -> str:
    return f"{prefix}:/" + "/".join(str(p) for p in path)


def schema_errors(schema: dict[str, Any], payload: Any) -> dict[Path, list[str]]:
    """jsonschema's errors by the path of the field each is about.

    A missing required property is reported at that property (jsonschema reports it at
    the object that lacks it).
    """
    out: dict[Path, list[str]] = {}
    for e in jsonschema.Draft202012Validator(schema).iter_errors(payload):
        path: Path = tuple(e.absolute_path)
        message = e.message
        if e.validator == "required" and isinstance(e.instance, dict):
            missing = [p for p in e.validator_value or () if p not in e.instance
                       and repr(p) in e.message]
            if missing:
                path, message = (*path, missing[0]), f"{missing[0]} is required"
        out.setdefault(path, []).append(message)
    return out


class SchemaForm:
    def __init__(self, schema: dict[str, Any], prefix: str, prefill: Any = None) -> None:
        self.root = schema
        self.prefix = prefix
        self.prefill = prefill
        self.slots: dict[Path, Any] = {}  # path -> st.empty() under that field
        self.input_errors: dict[Path, str] = {}  # what could not even be read (bad JSON...)

    # -- public -------------------------------------------------------------------------

    def render(self) -> dict[str, Any]:
        """Draw the form; the payload it holds (always an object)."""
        value = self._field(self.root, (), self.prefill, required=True, label="payload")
        if isinstance(value, dict):
            return value
        if value is not OMIT:
            self.input_errors[()] = "the payload must be a JSON object ({...})"
        return {}

    def show_errors(self, errors: dict[Path, list[str]]) -> None:
        """Each error under its field (or the closest enclosing one that has a slot)."""
        by_slot: dict[Path, list[str]] = {}
        for path, messages in errors.items():
            slot = next((path[:i] for i in range(len(path), -1, -1) if path[:i] in self.slots),
                        ())
            extra = path[len(slot):]
            where = "".join(f"[{p!r}]" for p in extra)
            by_slot.setdefault(slot, []).extend(f"{where}: {m}" if where else m
                                                for m in messages)
        for slot, messages in by_slot.items():
            target = self.slots.get(slot)
            if target is not None:
                target.error("\n\n".join(messages), icon=":material/error:")

    # -- fields -------------------------------------------------------------------------

    def _resolve(self, schema: dict[str, Any], depth: int = 0) -> dict[str, Any]:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#") or depth > 20:
            return schema
        target: Any = self.root
        for part in (p for p in ref[1:].split("/") if p):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return self._resolve(merged, depth + 1)

    def _field(self, schema: dict[str, Any], path: Path, prefill: Any, required: bool,
               label: str) -> Any:
        schema = self._resolve(schema)
        default = prefill if prefill is not None else schema.get("default")
        title = str(schema.get("title") or label) + (" *" if required else "")
        help_ = schema.get("description")
        key = field_key(self.prefix, path)
        kind = _kind(schema)
        if kind == "object" and schema.get("properties"):
            return self._object(schema, path, default, required, title, help_)
        if kind == "enum":
            value = self._enum(schema, default, required, title, help_, key)
        elif kind == "boolean":
            value = self._boolean(schema, default, required, title, help_, key)
        elif kind in ("integer", "number"):
            value = self._number(schema, kind, default, title, help_, key)
        elif kind == "string":
            value = self._string(schema, default, title, help_, key)
        elif kind == "array":
            value = self._array(schema, path, default, required, title, help_, key)
        else:  # an object without properties, a union, anything: JSON text
            value = self._json(path, default, title, help_, key,
                               "a JSON object" if kind == "object" else "a JSON value",
                               root=path == ())
        self.slots[path] = st.empty()
        return value

    def _object(self, schema: dict[str, Any], path: Path, default: Any, required: bool,
                title: str, help_: str | None) -> Any:
        default = default if isinstance(default, dict) else {}
        needed = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        box = st.container(border=True) if path else st.container()
        with box:
            if path:
                st.markdown(f"**{title}**")
                if help_:
                    st.caption(help_)
            self.slots[path] = st.empty()  # errors about the object itself
            for name, sub in schema["properties"].items():
                value = self._field(sub if isinstance(sub, dict) else {}, (*path, name),
                                    default.get(name), name in needed, name)
                if value is not OMIT:
                    out[name] = value
        return out if out or required else OMIT

    def _enum(self, schema: dict[str, Any], default: Any, required: bool, title: str,
              help_: str | None, key: str) -> Any:
        options = list(schema["enum"])
        if not required:
            options = [OMIT, *options]
        index = options.index(default) if default in options else (0 if options else None)
        value = st.selectbox(title, options, index=index, help=help_, key=key,
                             format_func=lambda v: _BLANK if v is OMIT else
                             (v if isinstance(v, str) else json.dumps(v)))
        return OMIT if value is None else value

    def _boolean(self, schema: dict[str, Any], default: Any, required: bool, title: str,
                 help_: str | None, key: str) -> Any:
        if required or "default" in schema:
            return st.checkbox(title, value=bool(default), help=help_, key=key)
        options = [OMIT, True, False]
        index = options.index(default) if isinstance(default, bool) else 0
        return st.selectbox(title, options, index=index, help=help_, key=key,
                            format_func=lambda v: _BLANK if v is OMIT else
                            ("true" if v else "false"))

    def _number(self, schema: dict[str, Any], kind: str, default: Any, title: str,
                help_: str | None, key: str) -> Any:
        cast = int if kind == "integer" else float
        bounds = {}
        for name, param in (("minimum", "min_value"), ("maximum", "max_value")):
            if isinstance(schema.get(name), int | float):
                bounds[param] = cast(schema[name])
        value = cast(default) if isinstance(default, int | float) and not isinstance(
            default, bool) else None
        got = st.number_input(title, value=value, step=cast(1) if kind == "integer" else None,
                              help=help_, key=key, placeholder="(empty)", **bounds)
        return OMIT if got is None else got

    def _string(self, schema: dict[str, Any], default: Any, title: str, help_: str | None,
                key: str) -> Any:
        value = default if isinstance(default, str) else ""
        placeholder = schema.get("format") or (
            f"e.g. {schema['examples'][0]}" if schema.get("examples") else None)
        long = schema.get("format") == "textarea" or (schema.get("maxLength") or 0) > 200
        widget = st.text_area if long else st.text_input
        got = widget(title, value=value, help=help_, key=key, placeholder=placeholder)
        return got if got else OMIT

    def _array(self, schema: dict[str, Any], path: Path, default: Any, required: bool,
               title: str, help_: str | None, key: str) -> Any:
        items = self._resolve(schema.get("items") or {})
        default = default if isinstance(default, list) else []
        item_kind = _kind(items)
        if item_kind == "enum":
            chosen = st.multiselect(title, list(items["enum"]),
                                    default=[d for d in default if d in items["enum"]],
                                    help=help_, key=key)
            return chosen if chosen or required else OMIT
        if item_kind in _PRIMITIVES:
            text = st.text_area(title, value="\n".join(_line(v) for v in default),
                                help=(help_ + "\n\n" if help_ else "") + "One item per line.",
                                key=key, placeholder=f"one {item_kind} per line")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if not lines:
                return [] if required else OMIT
            try:
                return [_parse_item(line, item_kind) for line in lines]
            except ValueError as e:
                self.input_errors[path] = str(e)
                return OMIT
        return self._json(path, default or None, title, help_, key, "a JSON array")

    def _json(self, path: Path, default: Any, title: str, help_: str | None, key: str,
              what: str, root: bool = False) -> Any:
        text = st.text_area(
            title, value=json.dumps(default, indent=2, ensure_ascii=False)
            if default is not None else "",
            help=(help_ + "\n\n" if help_ else "") + f"Write {what}.", key=key,
            placeholder='{"key": "value"}' if "object" in what else None,
            height=150 if root else "content")
        if not text.strip():
            return {} if root else OMIT
        try:
            return json.loads(text)
        except ValueError as e:
            self.input_errors[path] = f"not valid JSON: {e}"
            return OMIT


def _line(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_item(line: str, kind: str) -> Any:
    if kind == "string":
        return line
    if kind == "boolean":
        if line.lower() in ("true", "false"):
            return line.lower() == "true"
        raise ValueError(f"{line!r} is not true or false")
    try:
        return int(line) if kind == "integer" else float(line)
    except ValueError:
        raise ValueError(f"{line!r} is not {'an integer' if kind == 'integer' else 'a number'}"
                         ) from None


def top_level_fields(schema: dict[str, Any], payload: dict[str, Any]) -> list[str]:
    """The payload's top-level field names: the schema's first, then any others it has."""
    names: Iterable[str] = (schema.get("properties") or {}).keys()
    return list(dict.fromkeys([*names, *payload]))
