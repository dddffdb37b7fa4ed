"""Generate the config reference of stepkit's built-in steps from their attrs classes.

Used by ``docs/hooks.py`` during ``mkdocs build``; run it directly to print the
Markdown: ``python docs/gen_ref.py``.
"""

from __future__ import annotations


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def step_reference(name: str, heading: bool = False) -> str:
    """The Markdown reference of one step: roles, config table, optimizers."""
    from stepkit.cli import describe_step

    info = describe_step(name)
    lines = [f"## `{name}`", "", info["description"], ""] if heading else []
    lines += [f"- **Roles:** {', '.join(f'`{r}`' for r in info['roles'])}",
             f"- **Optimizers:** {', '.join(f'`{r}`' for r in info['optimizer_roles'])}",
             f"- **Tracked values:** {', '.join(f'`{t}`' for t in info['tracked'])}",
             f"- **Loss:** `{info['loss_kind']}`"
             f" ({'compile(loss=...)' if info['loss_kind'] != 'none' else 'from the config'})",
             f"- **Default networks:** {'yes' if info['default_networks'] else 'no'}",
             f"- **`stepkit fit` data:** `{info['cli']['data_kind']}`", "",
             f"**Config** (`{info['config_class']}`):", ""]
    if info["config"]:
        lines += ["| Field | Type | Default | Constraints | Description |",
                  "|---|---|---|---|---|"]
        for f in info["config"]:
            default = "required" if f["required"] else f"`{f['default']!r}`"
            lines.append(f"| `{f['name']}` | `{_cell(f['type'])}` | {_cell(default)} | "
                         f"{_cell(', '.join(f['constraints']) or '-')} | {_cell(f['doc'])} |")
    else:
        lines.append("No settings.")
    lines += ["", "**Default optimizers:**", ""]
    for role, opt in info["default_optimizers"].items():
        extra = ", ".join(f"{k}={v}" for k, v in opt.items() if k != "class_name")
        lines.append(f"- `{role}`: `{opt['class_name']}({extra})`")
    return "\n".join(lines) + "\n"


def builtin_names() -> list[str]:
    """The names of the steps stepkit itself ships."""
    from stepkit.registry import BUILTIN_DISTRIBUTION, list_steps

    return [i.name for i in list_steps() if i.distribution == BUILTIN_DISTRIBUTION]


if __name__ == "__main__":
    print("\n".join(step_reference(n, heading=True) for n in builtin_names()))
