"""What ``stepkit info`` shows: a step's config fields, defaults and constraints."""

from __future__ import annotations

from typing import Any


def _describe_validator(v: Any) -> list[str]:
    if v is None:
        return []
    if hasattr(v, "_validators"):
        return [d for inner in v._validators for d in _describe_validator(inner)]
    if hasattr(v, "compare_op") and hasattr(v, "bound"):
        return [f"{v.compare_op} {v.bound!r}"]
    if hasattr(v, "options"):
        return [f"one of {list(v.options)!r}"]
    if type(v).__name__ == "_OptionalValidator":
        return [f"optional: {d}" for d in _describe_validator(v.validator)] or ["optional"]
    if hasattr(v, "type") and isinstance(v.type, type | tuple):
        types = v.type if isinstance(v.type, tuple) else (v.type,)
        return [f"instance of {' | '.join(t.__name__ for t in types)}"]
    for attr, label in (("min_length", "length >="), ("max_length", "length <=")):
        if hasattr(v, attr):
            return [f"{label} {getattr(v, attr)}"]
    if hasattr(v, "pattern"):
        return [f"matches {getattr(v.pattern, 'pattern', v.pattern)!r}"]
    doc = (getattr(v, "__doc__", None) or "").strip().splitlines()
    return [f"checked by {getattr(v, '__name__', repr(v))}" + (f": {doc[0]}" if doc else "")]


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def _field_docs(cls: type) -> dict[str, str]:
    """Descriptions from the ``Attributes:`` sections of ``cls``'s and its bases' docstrings.

    A subclass's own description of a field wins; fields it does not describe keep
    the description of the base class that does.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object:
            docs.update(_attributes_section(klass.__dict__.get("__doc__")))
    return docs


def _attributes_section(doc: str | None) -> dict[str, str]:
    """``{name: description}`` from the ``Attributes:`` section of one Google-style docstring."""
    import inspect
    import re

    docs, current, inside = {}, None, False
    for line in inspect.cleandoc(doc or "").splitlines():
        if line.strip() == "Attributes:":
            inside = True
            continue
        if inside:
            m = re.match(r"^\s{4}(\w+)(?: \(.*\))?: (.*)$", line)
            if m:
                current = m.group(1)
                docs[current] = m.group(2).strip()
            elif line.startswith("        ") and current:
                docs[current] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                inside = False
    return docs


def _optimizer_info(opt: Any) -> dict[str, Any]:
    import keras

    opt = keras.optimizers.get(opt)
    cfg = opt.get_config()
    skip = {"name"} | ({"ema_momentum", "ema_overwrite_frequency"} if not cfg.get("use_ema")
                       else set())
    keep = {k: float(f"{v:.7g}") if isinstance(v, float) else v for k, v in cfg.items()
            if k not in skip and v is not None and v is not False
            and isinstance(v, int | float | str)}
    return {"class_name": type(opt).__name__, **keep}


def config_fields(config_class: type) -> list[dict[str, Any]]:
    """Each field of an attrs config class: name, type, default, constraints, doc."""
    import attrs

    try:
        attrs.resolve_types(config_class)
    except Exception:  # noqa: BLE001,S110 - unresolvable annotations stay strings
        pass
    docs = _field_docs(config_class)
    fields = []
    for f in attrs.fields(config_class):
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory() if not default.takes_self else "(computed)"
        required = default is attrs.NOTHING
        constraints = _describe_validator(f.validator)
        if f.converter is not None:
            constraints.append(f"converted with {getattr(f.converter, '__name__', f.converter)}")
        fields.append({"name": f.name, "type": _type_name(f.type), "required": required,
                       "default": None if required else _jsonable(default),
                       "constraints": constraints, "doc": docs.get(f.name, "")})
    return fields


def describe_wrapper(name: str) -> dict[str, Any]:
    """What ``stepkit info NAME`` shows for a step wrapper, as a JSON-ready dict."""
    from stepkit.registry import registry

    reg = registry()
    cls = reg.get_wrapper(name)
    info = next(i for i in reg.wrappers() if i.name == name)
    return {"name": name, "kind": "wrapper", "distribution": info.distribution,
            "version": info.version, "plugin": info.plugin, "description": cls.description,
            "doc": (cls.__doc__ or "").strip().split("\n\n")[0],
            "per_role": cls.per_role, "config_class": cls.config_class.__name__,
            "config": config_fields(cls.config_class)}


def _format_fields(info: dict[str, Any]) -> list[str]:
    lines = [f"config ({info['config_class']}):"]
    if not info["config"]:
        lines.append("  (no settings)")
    for f in info["config"]:
        default = "required" if f["required"] else f"default {f['default']!r}"
        rules = f"; {', '.join(f['constraints'])}" if f["constraints"] else ""
        lines.append(f"  {f['name']}: {f['type']} = {default}{rules}")
        if f["doc"]:
            lines.append(f"      {f['doc']}")
    return lines


def format_wrapper(info: dict[str, Any]) -> str:
    """``describe_wrapper``'s dict as text."""
    source = f"{info['distribution'] or 'plugin ' + info['plugin']} {info['version'] or ''}"
    roles = ("every trained role of the step, or the spec's `roles`" if info["per_role"]
             else "the step's data (no roles)")
    lines = [f"{info['name']}  (wrapper, {source.strip()})", f"  {info['description']}", "",
             f"applies to: {roles}", "", *_format_fields(info), "",
             f"use: StepModel(..., wrappers=[{{'name': {info['name']!r}, ...}}]) or "
             f"stepkit fit --wrap {info['name']}:KEY=VALUE"]
    return "\n".join(lines)


def describe_step(name: str) -> dict[str, Any]:
    """What ``stepkit info NAME`` shows, as a JSON-ready dict."""
    from stepkit.callbacks import is_generative
    from stepkit.cli_settings import default_preset, has_default_networks
    from stepkit.registry import registry

    info = registry().info(name)
    cls = info.step_class
    fields = config_fields(cls.config_class)
    step = cls()
    preset = default_preset(cls)
    return {
        "name": info.name, "distribution": info.distribution, "version": info.version,
        "plugin": info.plugin, "description": cls.description,
        "doc": (cls.__doc__ or "").strip().split("\n\n")[0],
        "roles": list(cls.roles), "optimizer_roles": list(cls.trained_roles()),
        "tracked": list(cls.tracked), "loss_kind": cls.loss_kind,
        "config_class": cls.config_class.__name__, "config": fields,
        "default_optimizers": {r: _optimizer_info(o)
                               for r, o in step.default_optimizers().items()},
        "default_networks": has_default_networks(cls),
        "presets": {name: {k: _jsonable(v) for k, v in values.items()}
                    for name, values in (getattr(cls, "presets", None) or {}).items()},
        "cli": {"data_kind": preset["data_kind"], "generative": is_generative(cls),
                "classifier_network": bool(preset.get("classifier"))},
    }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return getattr(value, "__name__", repr(value))


def format_step(info: dict[str, Any]) -> str:
    """``describe_step``'s dict as text."""
    source = f"{info['distribution'] or 'plugin ' + info['plugin']} {info['version'] or ''}"
    lines = [f"{info['name']}  ({source.strip()})", f"  {info['description']}", "",
             f"roles: {', '.join(info['roles'])}   tracked: {', '.join(info['tracked'])}   "
             f"loss: {info['loss_kind']}",
             f"default networks: {'yes' if info['default_networks'] else 'no'}", "",
             *_format_fields(info)]
    if info.get("presets"):
        lines += ["", "presets (config preset=NAME; settings given with it win):"]
        for name, values in info["presets"].items():
            settings = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "(the defaults)"
            lines.append(f"  {name}: {settings}")
    lines += ["", "default optimizers:"]
    for role, opt in info["default_optimizers"].items():
        extra = ", ".join(f"{k}={v}" for k, v in opt.items() if k != "class_name")
        lines.append(f"  {role}: {opt['class_name']}({extra})")
    cli = info["cli"]
    lines += ["", f"stepkit fit: data {cli['data_kind']}, sample grids: "
              f"{'yes' if cli['generative'] else 'no'}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- commands
