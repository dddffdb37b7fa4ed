"""The mechanical rewrite of a Keras test module: trainer calls go through a StepModel.

Every attribute access ``X.name`` where ``name`` is a trainer attribute
(:data:`keras_suite.runtime.ROUTED`) becomes ``_stepkit_route(X).name``, and
``X.compile/fit/evaluate/predict/*_on_batch`` (and setting ``X.run_eagerly`` or
``X.jit_compile``) become ``_stepkit_route(X, True).<name>``: the network's
StepModel is made on its first way into a training loop and reused after.
``self.``/``cls.``/``super()`` receivers (a class's own methods, a TestCase's
helpers) and imported modules are left alone, and ``_stepkit_route`` leaves anything
that is not a Keras model (and any StepModel) untouched. Functions that save a model
given as an argument (``tf.saved_model.save(model, ...)``,
``saving.save_model(model, ...)``) get the model's wrapper, and so do
``getattr/setattr/hasattr(model, name)`` for a trainer ``name``. A model handed to a
callback (``cb.set_model(model)``) is one being trained: it is wrapped;
``CallbackList(..., model=model)`` gets its wrapper if any. Module-level imports of
other backends (jax, torch) become optional.
"""

from __future__ import annotations

import ast

from keras_suite.runtime import ENTRY_POINTS, ROUTED

HELPER = "_stepkit_route"
OPTIONAL_IMPORTS = frozenset({"jax", "torch", "flax", "orbax", "tensorflow_text"})
# Functions whose first argument is a model being saved as a whole.
SAVE_FUNCTIONS = frozenset({"save_model", "export_model", "export_saved_model"})
# Trainer attributes that, set on a network, configure its loops.
LOOP_SETTINGS = frozenset({"run_eagerly", "jit_compile"})


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _Rewriter(ast.NodeTransformer):
    def __init__(self, modules: set[str]) -> None:
        self.modules = modules
        self.routed = 0

    def _left_alone(self, base: ast.AST) -> bool:
        if isinstance(base, ast.Name):
            return base.id in ("self", "cls") or base.id in self.modules
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Name):
            return base.func.id in ("super", HELPER)
        if isinstance(base, ast.Constant):
            return True
        dotted = _dotted(base)
        return dotted is not None and dotted.split(".")[0] in self.modules

    def _route(self, value: ast.AST, create: bool) -> ast.Call:
        self.routed += 1
        args = [value] + ([ast.Constant(True)] if create else [])
        return ast.Call(func=ast.Name(HELPER, ast.Load()), args=args, keywords=[])

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if (node.attr in ROUTED and not isinstance(node.ctx, ast.Del)
                and not self._left_alone(node.value)):
            # Setting how the loops run (`model.jit_compile = True` before predict)
            # configures the training side: the StepModel is made for it.
            create = node.attr in ENTRY_POINTS or (
                isinstance(node.ctx, ast.Store) and node.attr in LOOP_SETTINGS)
            node.value = self._route(node.value, create)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = _dotted(node.func) or ""
        if (name in ("getattr", "setattr", "hasattr") and len(node.args) >= 2
                and not self._left_alone(node.args[0])):
            self.routed += 1
            node.args[0] = ast.Call(func=ast.Name(HELPER, ast.Load()),
                                    args=[node.args[0], ast.Constant(False), node.args[1]],
                                    keywords=[])
            return node
        last = name.rsplit(".", 1)[-1]
        if node.args and (last in SAVE_FUNCTIONS or name.endswith("saved_model.save")):
            node.args[0] = self._route(node.args[0], False)
        # A model handed to one callback (`cb.set_model(model)`) is one being
        # trained: it is wrapped. A CallbackList gets the wrapper if there is one
        # (Keras' tests build lists around models they never compile).
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "set_model"
                and node.args and not self._left_alone(node.args[0])):
            node.args[0] = self._route(node.args[0], True)
        if last == "CallbackList":
            for kw in node.keywords:
                if kw.arg == "model" and not self._left_alone(kw.value):
                    kw.value = self._route(kw.value, False)
        return node


def _optional_import(node: ast.Import | ast.ImportFrom) -> ast.AST:
    """``import jax`` -> ``try: import jax`` / ``except ImportError: jax = None``."""
    if isinstance(node, ast.Import):
        bound = [a.asname or a.name.split(".")[0] for a in node.names]
    else:
        bound = [a.asname or a.name for a in node.names]
    fallback = [ast.Assign(targets=[ast.Name(n, ast.Store())], value=ast.Constant(None))
                for n in bound]
    return ast.Try(body=[node], handlers=[ast.ExceptHandler(
        type=ast.Name("ImportError", ast.Load()), name=None, body=fallback)],
        orelse=[], finalbody=[])


def rewrite_source(source: str, filename: str = "<keras test>") -> tuple[str, int]:
    """Return the rewritten module and the number of routed receivers."""
    tree = ast.parse(source, filename)
    modules: set[str] = set()
    body: list[ast.stmt] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            if isinstance(stmt, ast.Import):
                roots = {a.name.split(".")[0] for a in stmt.names}
                modules.update(a.asname or a.name.split(".")[0] for a in stmt.names)
            else:
                roots = {(stmt.module or "").split(".")[0]}
                # `from keras.src import layers`: a module, or a function/class
                # (never a model instance): either way not a receiver to route.
                modules.update(a.asname or a.name for a in stmt.names)
            if roots & OPTIONAL_IMPORTS:
                stmt = _optional_import(stmt)
        body.append(stmt)
    tree.body = body
    rewriter = _Rewriter(modules)
    tree = rewriter.visit(tree)
    header = ast.parse(f"from keras_suite.runtime import {HELPER}").body
    pos = 0
    while pos < len(tree.body) and (
        (isinstance(tree.body[pos], ast.ImportFrom) and tree.body[pos].module == "__future__")
        or (pos == 0 and isinstance(tree.body[0], ast.Expr)
            and isinstance(tree.body[0].value, ast.Constant))):
        pos += 1
    tree.body[pos:pos] = header
    ast.fix_missing_locations(tree)
    note = ("# Rewritten by stepkit's tests/keras_suite from the installed Keras test module\n"
            f"# {filename}: trainer calls go through StepModel(model, step='supervised').\n")
    return note + ast.unparse(tree) + "\n", rewriter.routed
