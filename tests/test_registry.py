"""Step discovery through real entry points of really installed distributions."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import stepkit
from stepkit import StepDefinitionError, UnknownStepError
from stepkit.registry import StepRegistry

DATA = Path(__file__).parent / "data"
PACKAGES = ["stepkit-echo", "stepkit-broken", "stepkit-dup-a", "stepkit-dup-b",
            "stepkit-twins"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Install the test plugin distributions with pip into their own folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), *(str(DATA / p) for p in PACKAGES)],
        check=True, capture_output=True)
    return target


def run(site, code, **env):
    """Run ``code`` in a fresh interpreter that sees the installed plugins."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("STEPKIT_") and k != "PYTHONWARNINGS"}
    full_env.update(PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="3", **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=300)


def test_installed_plugin_step_is_found_by_name_and_trains(site):
    proc = run(site, """
        import json, sys, warnings
        warnings.simplefilter("error")          # no broken plugin may be touched
        import numpy as np, keras, stepkit
        model = stepkit.StepModel(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]),
                                  step="echo", config={"scale": 2.0})
        model.compile(optimizer="sgd")
        h = model.fit(np.ones((8, 3), "float32"), np.zeros((8, 1), "float32"), verbose=0)
        info = stepkit.registry.registry().info("echo")
        print(json.dumps({"loss": h.history["loss"], "source": info.source,
                          "loaded": sorted(m for m in sys.modules if m.startswith("stepkit_"))}))
    """)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["source"] == "stepkit-echo 1.2.0"
    assert out["loss"][0] > 0
    # get_step("echo") imported the plugin named after it, and nothing else.
    assert out["loaded"] == ["stepkit_echo"]


def test_broken_plugin_warns_and_other_steps_still_work(site):
    proc = run(site, """
        import stepkit
        names = [i.name for i in stepkit.list_steps()]
        print(names)
        print([(b.plugin, b.distribution, b.error) for b in stepkit.registry.registry().broken()])
    """)
    assert proc.returncode == 0, proc.stderr
    assert "plugin 'broken' from stepkit-broken 0.0.1 failed to load" in proc.stderr
    assert "No module named 'stepkit_missing_dependency'" in proc.stderr
    assert "'echo'" in proc.stdout and "'supervised'" in proc.stdout and "'gan'" in proc.stdout
    assert "('broken', 'stepkit-broken'" in proc.stdout


def test_strict_mode_makes_a_broken_plugin_an_error(site):
    proc = run(site, "import stepkit; stepkit.list_steps()", STEPKIT_STRICT_PLUGINS="1")
    assert proc.returncode != 0
    assert "PluginLoadError" in proc.stderr and "stepkit-broken" in proc.stderr


def test_autoload_can_be_disabled(site):
    proc = run(site, """
        import stepkit
        print(sorted(i.name for i in stepkit.list_steps()))
        try:
            stepkit.get_step("echo")
        except stepkit.UnknownStepError as e:
            print("unknown:", e)
    """, STEPKIT_DISABLE_PLUGIN_AUTOLOAD="1")
    assert proc.returncode == 0, proc.stderr
    assert "['custom-loss', 'gan', 'supervised']" in proc.stdout
    assert "unknown: Unknown step 'echo'" in proc.stdout
    assert "failed to load" not in proc.stderr


def test_loading_can_be_limited_to_named_plugins(site):
    proc = run(site, "import stepkit; print(sorted(i.name for i in stepkit.list_steps()))",
               STEPKIT_PLUGINS="stepkit-echo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['custom-loss', 'echo', 'gan', 'supervised']"
    assert "failed to load" not in proc.stderr


def test_two_distributions_registering_one_name_are_both_named(site):
    proc = run(site, """
        import stepkit
        try:
            stepkit.get_step("dup")
        except stepkit.DuplicateStepError as e:
            print(e)
    """, STEPKIT_PLUGINS="dup,stepkit-echo")
    assert proc.returncode == 0, proc.stderr
    assert "Step name 'dup' is registered by more than one plugin" in proc.stdout
    assert "stepkit-dup-a 1.0.0" in proc.stdout and "stepkit-dup-b 2.0.0" in proc.stdout


def test_unknown_step_lists_steps_and_suggests_the_closest():
    with pytest.raises(UnknownStepError) as err:
        stepkit.StepModel(step="supervized")
    message = str(err.value)
    assert "Unknown step 'supervized'" in message
    assert "Did you mean 'supervised'?" in message
    assert "custom-loss" in message and "gan" in message


def test_builtin_steps_are_registered_through_stepkits_own_entry_point():
    info = stepkit.registry.registry().info("gan")
    assert info.plugin == "builtin" and info.distribution == "stepkit"


class Misspelt:
    @stepkit.hookimpl
    def stepkit_register_step(self, register):  # typo: the hook is ..._steps
        raise AssertionError("never called")


def test_misspelt_hook_name_fails_loudly():
    import pluggy

    with pytest.raises(pluggy.PluginValidationError, match="stepkit_register_step"):
        StepRegistry(autoload=False).register_plugin(Misspelt(), name="misspelt")


@pytest.mark.parametrize(("attrs", "message"), [
    ({"name": "Bad Name"}, "`name` must match"),
    ({"roles": ("optimizer",)}, "role 'optimizer' must be an identifier that is not"),
    ({"roles": ("fit",)}, "role 'fit' must be an identifier that is not"),
    ({"config_class": dict}, "`config_class` must be an attrs class"),
    ({"loss_kind": "sometimes"}, "`loss_kind` must be one of"),
])
def test_bad_step_definitions_are_rejected(attrs, message):
    base = {"name": "ok", "train_step": lambda s, c, d: None, "test_step": lambda s, c, d: None}
    cls = type("Bad", (stepkit.Step,), {**base, **attrs})

    class Plugin:
        @stepkit.hookimpl
        def stepkit_register_steps(self, register):
            register(cls)

    registry = StepRegistry(autoload=False, strict=True)
    with pytest.raises(stepkit.PluginLoadError, match=message):
        registry.register_plugin(Plugin(), name="bad")
    with pytest.raises(StepDefinitionError, match=message):
        cls.check_definition()


def test_builtin_step_lookup_imports_no_plugin(site):
    proc = run(site, """
        import sys, stepkit
        stepkit.get_step("gan")
        print(sorted(m for m in sys.modules if m.startswith("stepkit_")))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "failed to load" not in proc.stderr


def test_two_entry_points_to_one_module_register_it_once(site):
    # stepkit-twins: entry points twin-a and twin-b both name the module stepkit_twins.
    proc = run(site, """
        import json, sys, warnings
        warnings.simplefilter("error")          # a broken plugin would warn
        import stepkit
        from stepkit.registry import registry
        b = stepkit.get_step("twin-b")
        loaded = sorted(m for m in sys.modules if m.startswith("stepkit_"))
        a = stepkit.get_step("twin-a")
        infos = {n: registry().info(n) for n in ("twin-a", "twin-b")}
        print(json.dumps({"classes": [a.__qualname__, b.__qualname__], "loaded": loaded,
                          "plugins": {n: i.plugin for n, i in infos.items()},
                          "entry_points": {n: i.entry_points for n, i in infos.items()},
                          "sources": {n: i.source for n, i in infos.items()}}))
    """, STEPKIT_PLUGINS="stepkit-twins")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["classes"] == ["TwinA", "TwinB"]
    assert out["loaded"] == ["stepkit_echo", "stepkit_twins"]  # twins subclasses echo's step
    # each step is named after its own entry point, and both entry points are remembered
    assert out["plugins"] == {"twin-a": "twin-a", "twin-b": "twin-b"}
    assert out["entry_points"] == {"twin-a": ["twin-a", "twin-b"], "twin-b": ["twin-a", "twin-b"]}
    assert out["sources"] == {"twin-a": "stepkit-twins 0.2.0", "twin-b": "stepkit-twins 0.2.0"}


def test_stepkit_list_shows_both_steps_of_one_module_and_nothing_broken(site):
    proc = run(site, "from stepkit.cli import main; main(['list'])",
               STEPKIT_PLUGINS="stepkit-twins")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("twin-a ") and "stepkit-twins 0.2.0" in line for line in lines)
    assert any(line.startswith("twin-b ") and "stepkit-twins 0.2.0" in line for line in lines)
    assert "BROKEN" not in proc.stdout, proc.stdout
    assert "already registered" not in proc.stdout + proc.stderr


def test_a_plugin_registered_by_hand_outlives_reset_registry():
    import stepkit
    from stepkit.registry import reset_registry

    class Kept(stepkit.Step):
        name = "kept-after-reset"

        def train_step(self, ctx, data):
            pass

        def test_step(self, ctx, data):
            pass

    class Plugin:
        @stepkit.hookimpl
        def stepkit_register_steps(self, register):
            register(Kept)

    stepkit.register_plugin(Plugin(), name="kept-after-reset")
    reset_registry()
    assert stepkit.get_step("kept-after-reset") is Kept
