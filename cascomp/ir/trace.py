"""Tracing a user's model into a torch.fx GraphModule.

Submodules that fx cannot trace through (data-dependent control flow, sizes turned into Python numbers) are
captured by torch.export and traced through at the ATen level; those it cannot capture either are kept as
leaf modules automatically: the analysis then freezes the channels they touch. When even the top-level forward
cannot be traced, the error names the failing source line and says what to do. nn.MultiheadAttention is
traced through its decomposition (cascomp.ir.decompose) so that its heads can be pruned. Modules with
parametrizations (`weight_norm`) are traced through too: their weight is computed from its tensors in the
graph, which the analysis follows (cascomp.ir.rules_params).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import operator
import traceback
from collections.abc import Callable, Iterator

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils import parametrize

from cascomp.errors import TraceError
from cascomp.ir import op_table
from cascomp.ir.dead_code import eliminate_dead_code
from cascomp.ir.decompose import decompose_attention
from cascomp.ir.module_copy import copy_module

MAX_LEAF_RETRIES = 32


class _Tracer(fx.Tracer):
    """fx tracer that remembers which module it is inside, and keeps chosen modules whole."""

    def __init__(self, leaves: set[str], decomposed: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.leaves = leaves
        self.decomposed = decomposed
        self.stack: list[str] = []
        self.failed_in: str | None = None
        self.decomposition_nodes: list[fx.Node] = []

    def create_node(self, *args, **kwargs) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        if self.decomposed and any(path in self.decomposed for path in self.stack):
            self.decomposition_nodes.append(node)
        return node

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if parametrize.is_parametrized(m) or ".parametrizations." in f".{qualname}.":
            return qualname in self.leaves  # traced through: what a parametrization computes from its tensors
        # a class the op table lists itself is kept whole: its entry says what it computes
        return qualname in self.leaves or op_table.TABLE.registered(type(m)) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        qualname = self.path_of_module(m)
        self.stack.append(qualname)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = qualname
            raise
        finally:
            self.stack.pop()


def trace_module(model: nn.Module, example_inputs: tuple, example_kwargs: dict | None = None) -> fx.GraphModule:
    """Trace a copy of `model` in eval mode; the caller's model is never modified.

    Capture paths, in order:
    1. torch.fx symbolic tracing of the whole model (a Python-level graph: modules, functions, methods);
    2. where a submodule cannot be traced, torch.export captures it at the inputs the example gives it
       (sizes it turns into Python numbers specialised; a batch kept dynamic, checked at another batch) and
       its ATen-level graph is traced through (a module called several times: one capture, checked at every
       call, traced through at each; keyword inputs that are None by default and None at every call left out
       of the capture); 2b: where torch.export cannot return its output (an object it cannot flatten, such
       as a key-value cache) but the caller only reads fields of it (`out.last_hidden_state`), what is
       captured returns those fields alone; where that fails too, it is kept whole as a leaf: its channels
       are frozen with the reason and its multiply-adds counted by running it (cascomp.ir.analysis);
    3. where the top-level forward itself cannot be traced (control flow on sizes or values of its inputs),
       torch.export captures the model (shape-dependent branches specialised to the example inputs) and its
       ATen-level graph is traced as in 1; a branch on tensor values fails there too, and the error names
       the user's line.
    """
    model = copy_module(model).eval()
    try:
        return _trace_with_leaves(model, example_inputs, example_kwargs or {})
    except _TopLevelUntraceable as failure:
        exported = _exported(model, example_inputs, example_kwargs or {})
        if exported is None:
            raise TraceError(str(failure)) from failure.__cause__
        reference = failure.reference
    gm = _trace_with_leaves(exported, example_inputs, example_kwargs or {})
    _drop_unread(gm)
    _check_faithful(gm, reference, model, example_inputs, example_kwargs or {})
    return gm


def _output(model: nn.Module, example_inputs: tuple, example_kwargs: dict):
    with torch.no_grad():
        return model(*example_inputs, **example_kwargs)


def _check_faithful(gm: fx.GraphModule, reference, model: nn.Module, example_inputs: tuple,
                    example_kwargs: dict) -> None:
    """A graph captured in parts (torch.export, fields, dead code dropped) must compute what the model did on
    the example: every output tensor within 1e-3 of the reference's largest magnitude. A capture that does not
    is a bug in cascomp, never a model to prune."""
    got = _output(gm, example_inputs, example_kwargs)
    expected, found = torch.utils._pytree.tree_leaves(reference), torch.utils._pytree.tree_leaves(got)
    pairs = [(a, b) for a, b in zip(expected, found) if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)]
    for a, b in pairs:
        if a.shape != b.shape or not (a.numel() == 0 or not a.is_floating_point()
                                      or bool((a - b).abs().max() <= 1e-3 * a.abs().max() + 1e-5)):
            raise TraceError(f"the graph captured from {type(model).__name__} (torch.export for the parts torch.fx "
                             "cannot trace) does not compute what the model computes on the example "
                             f"(an output of shape {tuple(a.shape)} differs); please report this with the model")
    if len(pairs) != sum(isinstance(a, torch.Tensor) for a in expected):
        raise TraceError(f"the graph captured from {type(model).__name__} returns other outputs than the model "
                         "on the example; please report this with the model")


def _drop_unread(gm: fx.GraphModule) -> None:
    """torch.export keeps every parameter, read or not (those of the branch not taken, of an output nobody
    reads): drop the unread ones, which the cost model would count and the rewrite would drop."""
    eliminate_dead_code(gm)
    gm.delete_all_unused_submodules()
    gm.recompile()


class _TopLevelUntraceable(Exception):
    """The top-level forward cannot be traced by fx; the message says why and where. `reference`: the model's
    output on the example before any capture (what the captured graph must compute)."""

    def __init__(self, message: str, reference) -> None:
        super().__init__(message)
        self.reference = reference


def _exported(model: nn.Module, example_inputs: tuple, example_kwargs: dict,
              unbatched: frozenset[int] = frozenset()) -> nn.Module | None:
    """The module torch.export captures from `model` (non-strict, so any Python runs once), or None. Inputs
    whose id is in `unbatched` have no batch dim (their dim 0 stays what it is at any batch of the model)."""
    # torch.export fixes any dim of size 1, so a batch of one is captured as a batch of two (only then: an
    # input of batch 1 beside a batch of 2 broadcasts, as T5's position bias, and must stay 1)
    tensors = [t for t in (*example_inputs, *example_kwargs.values())
               if isinstance(t, torch.Tensor) and t.dim() and id(t) not in unbatched]
    if tensors and tensors[0].shape[0] == 1:
        two = lambda t: t if id(t) in unbatched else _batch_of_two(t)  # noqa: E731
        example_inputs = tuple(two(t) for t in example_inputs)
        example_kwargs = {name: two(t) for name, t in example_kwargs.items()}
    # the batch stays dynamic where the model allows it, as fx keeps it
    dynamic = _dynamic_batch(model, example_inputs, example_kwargs, unbatched)
    for shapes in (None,) if dynamic is None else (dynamic, None):
        try:
            # a failed capture also prints its partial graph on stderr: ours to report, in one line
            with torch.no_grad(), quiet_logger("torch"), contextlib.redirect_stderr(io.StringIO()):
                program = torch.export.export(model, example_inputs, kwargs=example_kwargs,
                                              dynamic_shapes=shapes, strict=False)
            return exported_module(program)
        except Exception:  # torch.export refuses what it cannot specialise: the fx error says more to the user
            continue
    return None


def _dynamic_batch(model: nn.Module, example_inputs: tuple, example_kwargs: dict,
                   unbatched: frozenset[int] = frozenset()):
    """torch.export's dynamic_shapes with dim 0 of every tensor input free (AUTO: kept where the code allows)
    but those in `unbatched`: by position, or by forward's parameter names when keyword inputs are given (None
    where they cannot be bound to its signature: captured at their own sizes)."""
    spec = lambda t: ({0: torch.export.Dim.AUTO} if isinstance(t, torch.Tensor) and t.dim()  # noqa: E731
                      and id(t) not in unbatched else None)
    if not example_kwargs:
        return tuple(spec(t) for t in example_inputs)
    try:
        signature = inspect.signature(model.forward)
        bound = signature.bind(*example_inputs, **example_kwargs)
    except (TypeError, ValueError):
        return None
    shapes = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        shapes[name] = ({key: spec(v) for key, v in value.items()} if kind is inspect.Parameter.VAR_KEYWORD else
                        tuple(spec(v) for v in value) if kind is inspect.Parameter.VAR_POSITIONAL else spec(value))
    return shapes


def exported_module(program: torch.export.ExportedProgram) -> nn.Module:
    """`program.module()`, with train() and eval() working again: module() makes them raise, which would
    stop the analysis and the exporter from setting the flag (the graph fixed its behaviour already)."""
    module = program.module()
    for name in ("train", "eval"):
        if name in vars(module):
            delattr(module, name)
    return module


def _batch_of_two(value):
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == 1:
        return torch.cat([value, value])
    return value


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence logger `name` (and its children, and any other logging meanwhile): torch.export logs a
    traceback for each op it fails on before raising, and a refused capture or a bad archive is ours to
    report in one line."""
    logger = logging.getLogger(name)
    level, disabled = logger.level, logging.root.manager.disable
    logger.setLevel(logging.CRITICAL)
    logging.disable(logging.CRITICAL)  # torch's child loggers with levels of their own (the export's graph dump)
    try:
        yield
    finally:
        logger.setLevel(level)
        logging.disable(disabled)


def _trace_with_leaves(model: nn.Module, example_inputs: tuple, example_kwargs: dict) -> fx.GraphModule:
    """Capture paths 1 and 2; _TopLevelUntraceable when the top-level forward fails."""
    decomposition = decompose_attention(model, example_inputs, example_kwargs or {})
    concrete = _concrete_args(model, example_inputs, example_kwargs or {})
    leaves: set[str] = set()
    exported: set[str] = set()
    tried: set[str] = set()  # leaves path 2b tried
    captured = False  # a submodule captured by torch.export (path 2 or 2b)
    reference = None  # the model's output on the example, taken before the first capture changes the model
    for _ in range(MAX_LEAF_RETRIES):
        tracer = _Tracer(leaves, decomposition.paths)
        try:
            graph = tracer.trace(model, concrete_args=concrete or None)
        except Exception as error:  # fx raises many kinds; we report them in one shape
            if reference is None:
                reference = _output(model, example_inputs, example_kwargs)
            failed = tracer.failed_in
            if failed and failed not in leaves and failed not in exported and failed not in decomposition.paths:
                exported.add(failed)  # path 2: torch.export captures the submodule, traced through as in 1
                if _export_in_place(model, failed, example_inputs, example_kwargs):
                    captured = True
                    continue
            if tracer.failed_in and tracer.failed_in not in leaves:
                leaves.add(tracer.failed_in)
                decomposition.restore_under(leaves)
                continue
            raise _TopLevelUntraceable(_explain(model, error), reference) from error
        # path 2b: a leaf whose output torch.export cannot return (an object it cannot flatten, such as a
        # key-value cache), of which the caller only reads some fields: captured returning those fields alone
        if _capture_read_fields(model, graph, leaves, tried, example_inputs, example_kwargs):
            captured = True  # (a leaf comes of a failed trace: the reference was taken then)
            continue
        _erase_unused(graph, tracer.decomposition_nodes)
        _name_placeholders_after_parameters(graph, model)
        graph._tracer_cls = fx.Tracer  # unpickling re-traces with this class: keep the output cascomp-free
        for node in graph.nodes:
            if isinstance(node.type, str):  # string annotations (PEP 563) would break pickling the module
                node.type = None
        gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
        if captured:  # what a capture computes that its caller does not read (BERT's pooler): gone, as in 3
            _drop_unread(gm)
            _check_faithful(gm, reference, model, example_inputs, example_kwargs)
        return gm
    raise TraceError(f"could not trace {type(model).__name__}: more than {MAX_LEAF_RETRIES} submodules fail to trace")


def _export_in_place(model: nn.Module, qualname: str, example_inputs: tuple, example_kwargs: dict,
                     fields: tuple | None = None) -> bool:
    """Replace submodule `qualname`, which fx cannot trace, by what torch.export captures of it at the inputs
    the model gives it on the example (sizes it turns into Python numbers specialised, the batch dynamic
    where it can stay so). A module called several times is captured at its first call and must compute
    what the original does at every call (the calls then share its parameters, as they did). With `fields`
    (path 2b), what is captured returns only those fields of the output (`("attr", name)`, `("item", key)`)
    and stands in the model as a `_Captured`. Refused (False) when the capture fails or the captured module
    does not compute what the original does."""
    module = model.get_submodule(qualname)
    calls: list[tuple[tuple, dict]] = []

    def record(_, args, kwargs):
        calls.append((args, kwargs))

    handle = module.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            model(*example_inputs, **example_kwargs)
    except Exception:
        return False
    finally:
        handle.remove()
    if not calls or not all(any(isinstance(a, torch.Tensor) for a in (*args, *kwargs.values()))
                            for args, kwargs in calls):
        return False
    original = module if fields is None else _selecting(module, fields)
    # keyword inputs that are None at every call and None by default: left out of the capture (torch.export
    # fails on None under **kwargs, e.g. BERT's attention), the module standing in drops them
    dropped = _none_by_default(module, calls)
    unbatched = _unbatched(model, module, calls[0], example_inputs, example_kwargs)
    captured = _exported(original, calls[0][0], {k: v for k, v in calls[0][1].items() if k not in dropped},
                         unbatched)
    if captured is None:
        return False
    standing = _Captured(captured, dropped, fields) if dropped or fields is not None else captured
    called = standing if fields is None else (lambda *args, **kwargs: standing.forward(*args, **kwargs).values)
    for args, kwargs in calls:  # one capture stands for every call: it must compute what each call computes
        try:
            with torch.no_grad():
                same = _same_outputs(original(*args, **kwargs), called(*args, **kwargs))
        except Exception:
            return False
        if not same or not _same_at_another_batch(original, called, args, kwargs, unbatched):
            return False
    parent, _, name = qualname.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, standing)
    return True


def _none_by_default(module: nn.Module, calls: list[tuple[tuple, dict]]) -> frozenset[str]:
    """The keyword inputs that are None at every call and bind to a parameter whose default is None (or to
    **kwargs): leaving them out changes nothing the module can see."""
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return frozenset()
    extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def defaults_to_none(name: str) -> bool:
        parameter = parameters.get(name)
        return extra if parameter is None else (parameter.default is None and
                                                parameter.kind is not inspect.Parameter.POSITIONAL_ONLY)

    names = set.intersection(*({k for k, v in kwargs.items() if v is None} for _, kwargs in calls))
    return frozenset(name for name in names if defaults_to_none(name))


def _capture_read_fields(model: nn.Module, graph: fx.Graph, leaves: set[str], tried: set[str],
                         example_inputs: tuple, example_kwargs: dict) -> bool:
    """Path 2b for every leaf not tried yet whose every use in `graph` reads a field of its output
    (`out.last_hidden_state`, `out[0]`); True when one was captured (the model is then traced again)."""
    captured = False
    for path in sorted(leaves - tried):
        tried.add(path)
        calls = [n for n in graph.nodes if n.op == "call_module" and str(n.target) == path]
        fields = [_field_read(user) for call in calls for user in call.users]
        if not calls or not fields or None in fields:
            continue
        if _export_in_place(model, path, example_inputs, example_kwargs, tuple(dict.fromkeys(fields))):
            leaves.discard(path)
            captured = True
    return captured


def _field_read(node: fx.Node) -> tuple | None:
    """("attr", name) for `getattr(out, name)`, ("item", key) for `out[key]`, None for any other use."""
    if node.op == "call_function" and node.target is getattr and isinstance(node.args[1], str):
        return ("attr", node.args[1])
    if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], (int, str)):
        return ("item", node.args[1])
    return None


def _read(value, field: tuple):
    kind, key = field
    return getattr(value, key) if kind == "attr" else value[key]


def _selecting(module: nn.Module, fields: tuple) -> nn.Module:
    """`module` (a shallow copy: the same submodules and tensors, so the capture keeps their names) whose
    forward returns the tuple of `fields` of what the module returns."""
    selecting = copy.copy(module)
    forward = type(module).forward
    selecting.forward = lambda *args, **kwargs: tuple(_read(forward(selecting, *args, **kwargs), f) for f in fields)
    return selecting


class _Fields:
    """What a `_Captured` with fields returns: the fields its caller reads, by attribute or by key."""

    def __init__(self, fields: tuple, values) -> None:
        self.fields, self.values = fields, values

    def __getattr__(self, name: str):
        fields = self.__dict__["fields"]
        if ("attr", name) not in fields:
            raise AttributeError(name)
        return self.__dict__["values"][fields.index(("attr", name))]

    def __getitem__(self, key):
        return self.values[self.fields.index(("item", key))]


class _Captured(nn.Module):
    """A torch.export capture standing for a module where it cannot be called as the module was: the keyword
    inputs in `dropped` (None) are left out of the call, and with `fields` (path 2b) its output, the tuple of
    those fields of the module's, reads like the module's for them. Its submodules and tensors are the
    capture's own (the same names as the original's), and tracing goes through it."""

    def __init__(self, captured: nn.Module, dropped: frozenset[str], fields: tuple | None) -> None:
        super().__init__()
        self.__dict__["captured"] = captured  # not a child: its children are this module's
        self._modules, self._parameters, self._buffers = captured._modules, captured._parameters, captured._buffers
        self.dropped, self.fields = dropped, fields

    def forward(self, *args, **kwargs):
        kwargs = {name: value for name, value in kwargs.items() if name not in self.dropped}
        # the capture's forward itself: tracing then records its ops over this module's tensors
        out = self.__dict__["captured"].forward(*args, **kwargs)
        return out if self.fields is None else _Fields(self.fields, out)


def _unbatched(model: nn.Module, module: nn.Module, call: tuple[tuple, dict], example_inputs: tuple,
               example_kwargs: dict) -> frozenset[int]:
    """The ids of the tensors `module` gets at `call` (its first call on the example) whose dim 0 is not the
    batch: those that keep their size when the model runs at the example's batch plus one (T5's position
    bias, batch 1 at any batch, handed from block to block). Empty when the model runs at no other batch."""
    seen: list[tuple[tuple, dict]] = []
    handle = module.register_forward_pre_hook(lambda _, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    try:
        with torch.no_grad():
            model(*(_grown(a) for a in example_inputs), **{k: _grown(a) for k, a in example_kwargs.items()})
    except Exception:
        return frozenset()
    finally:
        handle.remove()
    if not seen:
        return frozenset()
    (args, kwargs), (more_args, more_kwargs) = call, seen[0]
    pairs = list(zip(args, more_args)) + [(kwargs[k], more_kwargs.get(k)) for k in kwargs]
    return frozenset(id(a) for a, b in pairs if isinstance(a, torch.Tensor) and a.dim() and isinstance(b, torch.Tensor)
                     and b.dim() == a.dim() and b.shape[0] == a.shape[0])


def _grown(value):
    """`value` at one more in its batch (dim 0); anything else as it is."""
    return torch.cat([value, value[:1]]) if isinstance(value, torch.Tensor) and value.dim() else value


def _same_at_another_batch(module: nn.Module, captured: Callable, args: tuple, kwargs: dict,
                           unbatched: frozenset[int] = frozenset()) -> bool:
    """A capture that fixed the batch (torch.export falls back to static sizes) would compute garbage, not
    fail, at another batch: compare both at the example's batch plus one (inputs in `unbatched` as they are),
    where the original runs there."""
    grow = lambda a: a if id(a) in unbatched else _grown(a)  # noqa: E731
    grown, grown_kwargs = tuple(grow(a) for a in args), {key: grow(a) for key, a in kwargs.items()}
    try:
        with torch.no_grad():
            expected = module(*grown, **grown_kwargs)
    except Exception:  # the module itself takes no other batch: nothing to keep dynamic
        return True
    try:
        with torch.no_grad():
            return _same_outputs(expected, captured(*grown, **grown_kwargs))
    except Exception:
        return False


def _same_outputs(a, b) -> bool:
    """Tensors close, containers (tuples, lists, dicts such as a model-output class) alike element by element."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same_outputs(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        return all(_same_outputs(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _erase_unused(graph: fx.Graph, nodes: list[fx.Node]) -> None:
    """Drop what a decomposition computed that nobody reads (attention weights a caller ignores): left in,
    the analysis would freeze the heads that the weights' average reduces over."""
    for node in reversed(nodes):  # creation order is topological: users go before what they use
        if not node.users and node.op not in ("placeholder", "output"):
            graph.erase_node(node)


def graph_inputs(model: nn.Module, example_inputs: tuple, example_kwargs: dict) -> tuple:
    """The positional inputs of the traced graph: one value per placeholder, in forward's order.

    Cases:
    1. fx makes a placeholder of every named parameter of forward, keyword-only ones included, then one of
       `*args`: values are bound to forward's signature and listed in that order, so a keyword tensor lands
       in its own position and a `None` or flag in the middle keeps the ones after it in place;
    2. a parameter the caller did not give takes its default;
    3. non-tensor values are baked into the graph (`_concrete_args`) but their placeholders stay, guarded
       by a check that the same value comes in: the bound value is passed again;
    4. without a signature (builtins), the positional inputs are taken as they are.
    """
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        if example_kwargs:
            raise TraceError(f"cannot place example_kwargs {sorted(example_kwargs)}: the signature of "
                             f"{type(model).__name__}.forward is unknown; pass every input positionally")
        return tuple(example_inputs)  # case 4
    bound = _bind(model, signature, example_inputs, example_kwargs)
    inputs, rest = [], []
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            rest = list(bound.arguments.get(param.name, ()))
        elif param.kind is not inspect.Parameter.VAR_KEYWORD:  # case 1, 3
            inputs.append(bound.arguments.get(param.name, param.default))  # case 2
    return tuple(inputs + rest)


def _bind(model: nn.Module, signature: inspect.Signature, args: tuple, kwargs: dict):
    name = f"{type(model).__name__}.forward{signature}"
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise TraceError(f"the example inputs do not fit {name}: {error}; pass inputs positionally or by "
                         "the names forward declares") from None
    extra = [p.name for p in signature.parameters.values()
             if p.kind is inspect.Parameter.VAR_KEYWORD and bound.arguments.get(p.name)]
    if extra:
        raise TraceError(f"example_kwargs {sorted(bound.arguments[extra[0]])} reach **{extra[0]} of {name}, "
                         "which torch.fx cannot trace; declare them as named parameters of forward")
    return bound


def _concrete_args(model: nn.Module, args: tuple, kwargs: dict) -> dict:
    """Non-tensor arguments (flags, scales, None) are baked into the graph as constants."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return {}
    named = {p.name for p in signature.parameters.values()
             if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    bound = _bind(model, signature, args, kwargs).arguments
    return {name: value for name, value in bound.items()
            if name in named and not isinstance(value, torch.Tensor)}


def _name_placeholders_after_parameters(graph: fx.Graph, model: nn.Module) -> None:
    """fx names the placeholder of a baked-in argument `scale_1`; give it back the name forward declared, so
    the traced and the pruned model take the same keywords as the user's model."""
    try:
        names = [p.name for p in inspect.signature(model.forward).parameters.values()
                 if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    except (TypeError, ValueError):
        return
    placeholders = [n for n in graph.nodes if n.op == "placeholder" and not str(n.target).startswith("*")]
    if len(placeholders) == len(names):
        for node, name in zip(placeholders, names):
            node.target = name  # the generated code binds the node's own name to it (`scale_1 = scale`)


def _explain(model: nn.Module, error: Exception) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    user = [f for f in frames if "torch/fx" not in f.filename.replace("\\", "/") and "cascomp" not in f.filename]
    where = f" at {user[-1].filename}:{user[-1].lineno} `{(user[-1].line or '').strip()}`" if user else ""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"cannot trace {type(model).__name__}{where}: {reason}. torch.fx needs forward code without "
            "data-dependent control flow; move such code into a submodule (it is then kept whole) or make the "
            "branch depend on constructor arguments only")
