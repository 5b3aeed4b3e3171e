"""``Model``: layers wired as a graph and trained end to end by backpropagation; ``Sequential``: a chain.

    inputs = cnnlab.Input((32, 32, 3))                 # a graph model (see cnnlab.graph)
    x = Conv2D(16, 3, padding="same")(inputs)
    model = cnnlab.Model(inputs, Dense(10)(Flatten()(x)))
    model = cnnlab.Sequential([Conv2D(16, 3), Flatten(), Dense(10)], input_shape=(32, 32, 3))

The forward pass runs the layers in order; the backward pass runs them in
reverse, each turning the gradient of its output into the gradient of its
input while filling its own ``grads`` (``cnnlab.stack`` runs both, for every
model). Shapes are inferred from the input shape once, at build time, so
``summary()`` knows every layer's output shape, parameter count and
multiply-adds before any data is seen.
"""
from __future__ import annotations

import numpy as np

from . import losses as losses_mod
from . import resources
from . import layers as layers_mod
from ._io import CnnlabFileError
from .checks import check_int, is_int
from .model_file import read_model_file, write_model_file
from .stack import Stack


def _snake(name: str) -> str:
    """``MaxPool2D`` -> ``max_pool2d``, ``ReLU`` -> ``relu``, ``BatchNorm`` -> ``batch_norm``."""
    out = "".join("_" + ch.lower() if ch.isupper() and 0 < i < len(name) - 1 and name[i - 1].islower()
                  and name[i + 1].islower() else ch.lower() for i, ch in enumerate(name))
    return out.replace("2_d", "2d")


class Model:
    """A graph of layers: ``Model(inputs, outputs)`` with ``inputs = cnnlab.Input(shape)`` and
    ``outputs`` the symbolic tensor that calling layers on it gave (one input, one output).

    ``seed`` fixes every random choice (initialization, dropout, shuffling):
    the same seed gives bit-identical training. Each layer belongs to one place in the graph.
    """

    chain = False                                          # Sequential: the layers are a chain, stored as a list

    def __init__(self, inputs, outputs, seed: int = 0, loss="softmax", name: str = "model"):
        from .graph import trace
        inp, nodes, out = trace(inputs, outputs)
        layers = [layer for layer, _ in nodes]
        tensor = {id(inp): 0, **{id(layer._graph_output): i + 1 for i, layer in enumerate(layers)}}
        self._setup(layers, [[tensor[id(t)] for t in ins] for _, ins in nodes], tensor[id(out)], seed, loss, name,
                    inp.name)
        self.build(inp.shape)

    def _setup(self, layers, inbound, output, seed, loss, name, input_name="input"):
        """Check and name the layers and wire them (``inbound``/``output`` as in ``cnnlab.stack.Stack``)."""
        kind = type(self).__name__
        self.layers = list(layers)
        for layer in self.layers:
            if not isinstance(layer, layers_mod.Layer):
                raise ValueError(f"{kind}: every layer must be a cnnlab Layer, received {layer!r}")
        if not self.layers:
            raise ValueError(f"{kind}: needs at least one layer, received an empty list")
        self.seed = check_int("seed", seed, kind, minimum=0)
        self.rng = np.random.default_rng(self.seed)
        self.name = name
        self.loss = losses_mod.get(loss)
        self.input_shape = None
        self.input_name = input_name
        self.history = None
        self._name_layers()
        if input_name in {layer.name for layer in self.layers}:
            raise ValueError(f"{kind}: a layer is named {input_name!r} like the model's input")
        self.stack = Stack(self.layers, inbound, output)   # runs every forward and backward pass

    def _name_layers(self):
        """Give unnamed layers Keras-style names: ``conv2d``, ``conv2d_1``, ``dense``, ..."""
        taken = {layer.name for layer in self.layers if layer.name}
        counts: dict[str, int] = {}
        for layer in self.layers:
            if layer.name:
                continue
            base = _snake(type(layer).__name__)
            while True:
                k = counts.get(base, 0)
                counts[base] = k + 1
                candidate = base if k == 0 else f"{base}_{k}"
                if candidate not in taken:
                    break
            layer.name = candidate
            taken.add(candidate)
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__}: layer names must be unique, received {names}")

    # ---- building ---------------------------------------------------------
    def build(self, input_shape, dtype=np.float32):
        """Infer every layer's shapes and create the parameters, in order."""
        kind = type(self).__name__
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        input_shape = tuple(input_shape)
        if not input_shape or any(not is_int(d) or d < 1 for d in input_shape):
            raise ValueError(f"{kind}: input_shape must be positive ints such as (28, 28, 1), received {input_shape!r}")
        shapes = {0: tuple(int(d) for d in input_shape)}  # per tensor: its per-example shape
        inputs = []                                        # per layer: what it reads (a list when it joins)
        for i, (layer, srcs) in enumerate(zip(self.layers, self.stack.inbound)):
            if layer.joins != (len(srcs) > 1):
                raise ValueError(f"{kind}: {layer.label} reads {len(srcs)} input(s); "
                                 + ("a layer that joins branches belongs in a graph model (cnnlab.Model)"
                                    if layer.joins else "only layers that join branches read several"))
            got = [shapes[t] for t in srcs]
            inputs.append(got if layer.joins else got[0])
            shapes[i + 1] = tuple(layer.compute_output_shape(inputs[-1]))   # shapes only: nothing allocated yet
        count, nbytes = resources.parameter_bytes(zip(self.layers, inputs), dtype)
        resources.require(nbytes, f"{self.name}: its {count:,} parameters and their gradients")
        for layer, got in zip(self.layers, inputs):
            layer.build(got, rng=self.rng, dtype=dtype)
        self.input_shape = shapes[0]
        self.stack.mark_input_gradients()                  # nothing to learn below a layer: it skips dx
        return self

    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def _require_built(self):
        if not self.built:
            raise ValueError(f"{type(self).__name__}: the model is not built; pass input_shape=(H, W, C) or call build()")

    @property
    def output_shape(self):
        self._require_built()
        return self.layers[self.stack.output - 1].output_shape

    @property
    def num_classes(self) -> int:
        shape = self.output_shape
        if len(shape) != 1:
            raise ValueError(f"{type(self).__name__}: a classifier must end in (N, classes) scores; the last layer gives {shape}")
        return shape[0]

    def astype(self, dtype):
        """Convert parameters, gradients and buffers (e.g. to float64 for gradient checks)."""
        self._require_built()
        for layer in self.layers:
            layer.dtype = np.dtype(dtype)
            for d in (layer.params, layer.grads, layer.buffers):
                for k in d:
                    d[k] = d[k].astype(dtype)
        return self

    # ---- forward and backward ------------------------------------------------
    def check_input(self, x, what="x"):
        """Validate a batch of examples against ``input_shape``; return it as an array."""
        self._require_built()
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: expected {what} of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"received {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{self.name}: expected floating-point {what} (images scaled to [0, 1]), received {x.dtype}")
        return x

    def check_labels(self, y, n, what="y"):
        y = np.asarray(y)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{self.name}: expected integer labels {what} of shape ({n},), received {y.dtype} {y.shape}")
        k = self.num_classes
        if n and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"{self.name}: labels {what} must lie in [0, {k - 1}] for a {k}-class model, "
                             f"received values in [{y.min()}, {y.max()}]")
        return y

    def forward(self, x, training=False, capture=None):
        """The model's output for ``x``; with ``capture`` (``True`` or layer names) also ``{name: output}``.

        See ``cnnlab.stack.Stack.forward``: fused steps run where nothing captured lies between them.
        """
        return self.stack.forward(x, training, capture)

    __call__ = forward

    def backward(self, dy, stop_at=None):
        """Backpropagate ``dL/d(output)``; returns ``dL/d(input)`` if the first layers compute it,
        or ``dL/d(output of layer stop_at)``."""
        return self.stack.backward(dy, stop_at)

    def input_gradient(self, x, dy_out, at=None):
        """``dL/dx`` (or ``dL/d(output of layer at)``) for the output gradient ``dy_out`` (saliency, Grad-CAM)."""
        return self.stack.input_gradient(x, dy_out, at)

    # ---- parameters --------------------------------------------------------
    def parameters(self):
        """``(dotted_name, param, grad)`` for every trainable array, in layer order."""
        return [(f"{layer.name}.{k}", p, layer.grads[k]) for layer in self.layers for k, p in layer.params.items()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer under ``"layer_name.key"`` (e.g. ``"conv2d.kernel"``)."""
        sd = {}
        for layer in self.layers:
            for k, v in {**layer.params, **layer.buffers}.items():
                sd[f"{layer.name}.{k}"] = v
        return sd

    def load_state_dict(self, state: dict, source: str = "state dict"):
        """Copy arrays into the model; names and shapes must match exactly."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise CnnlabFileError(f"{source} does not match the model: missing {missing or 'none'}, "
                                  f"unexpected {unexpected or 'none'}")
        for k, dst in own.items():
            src = np.asarray(state[k])
            if src.shape != dst.shape:
                raise CnnlabFileError(f"{source}: {k!r} has shape {src.shape}, the model expects {dst.shape}")
            if not np.isfinite(src).all():
                raise CnnlabFileError(f"{source}: {k!r} contains NaN or infinite values")
            dst[...] = src
        return self

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.layers[key]
        for layer in self.layers:
            if layer.name == key:
                return layer
        raise KeyError(f"no layer named {key!r}; the layers are {[layer.name for layer in self.layers]}")

    # ---- description ---------------------------------------------------------
    def summary_table(self):
        """``(header, rows, totals)``: one row of text per layer (name and type, output shape, parameters,
        multiply-adds, and for a graph what it reads); ``totals``: ``input`` (the shape), ``params``, ``macs``.
        ``summary()`` prints it, a notebook shows it as HTML (``_repr_html_``)."""
        self._require_built()
        header = ("Layer (type)", "Output shape", "Params", "MACs") + (() if self.chain else ("Inputs",))
        rows = [(f"{layer.name} ({type(layer).__name__})", str((None,) + layer.output_shape),
                 f"{layer.num_params:,}", f"{layer.macs():,}") + (() if self.chain else (", ".join(inputs),))
                for layer, inputs in zip(self.layers, self.inbound_names())]
        totals = {"input": f"(None, {', '.join(map(str, self.input_shape))})", "params": self.num_params,
                  "macs": sum(layer.macs() for layer in self.layers)}
        return header, rows, totals

    def summary(self, print_fn=print) -> str:
        """A table of every layer's output shape, parameters and multiply-adds (and inputs, for a graph), with totals."""
        header, body, totals = self.summary_table()
        rows = [header] + body
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        line = lambda r: "  ".join(c.rjust(w) if i in (2, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()  # noqa: E731
        rule = "-" * len(line(rows[0]))
        text = "\n".join([f'Model "{self.name}"  input {totals["input"]}', rule,
                          line(rows[0]), rule, *map(line, rows[1:]), rule,
                          f"Total params: {totals['params']:,}",
                          f"Multiply-adds per example (forward): {totals['macs']:,}"])
        if print_fn is not None:
            print_fn(text)
        return text

    def _repr_html_(self) -> str | None:
        """A notebook cell whose value is the model shows ``summary()``'s table (``cnnlab.notebook.model_html``);
        an unbuilt model shows its plain text."""
        if not self.built:
            return None
        from .notebook import model_html
        return model_html(self)

    def inbound_names(self) -> list[list[str]]:
        """The names of what each layer reads: the input's name or earlier layers' names."""
        name = [self.input_name] + [layer.name for layer in self.layers]
        return [[name[t] for t in srcs] for srcs in self.stack.inbound]

    def get_config(self) -> dict:
        """The architecture as JSON-ready data; a graph model's layers record the names they read (``inbound``)."""
        config = {"name": self.name, "input_shape": list(self.input_shape) if self.built else None, "seed": self.seed,
                  "loss": {"name": self.loss.name, "config": self.loss.get_config()},
                  "layers": [{"class": type(layer).__name__, "name": layer.name, "config": layer.get_config()}
                             for layer in self.layers]}
        if not self.chain:
            for spec, inputs in zip(config["layers"], self.inbound_names()):
                spec["inbound"] = inputs
            config.update(input_name=self.input_name, output=self.layers[self.stack.output - 1].name)
        return config

    @classmethod
    def from_config(cls, config: dict, source: str = "architecture") -> "Model":
        """Rebuild a model from ``get_config()`` output (or a hand-written JSON architecture).

        Layers with ``inbound`` lists make a graph ``Model``; without, a ``Sequential``.
        """
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise CnnlabFileError(f"{source}: expected an object with a \"layers\" list")
        built = []
        for i, spec in enumerate(config["layers"]):
            if not isinstance(spec, dict) or spec.get("class") not in layers_mod.LAYERS:
                raise CnnlabFileError(f"{source}: layer {i} has unknown class {spec.get('class') if isinstance(spec, dict) else spec!r}; "
                                      f"known: {sorted(layers_mod.LAYERS)}")
            if not isinstance(spec.get("config", {}), dict) or not isinstance(spec.get("name"), (str, type(None))):
                raise CnnlabFileError(f"{source}: layer {i} ({spec['class']}): config must be an object and name a "
                                      f"string, found {spec.get('config')!r} and {spec.get('name')!r}")
            try:
                built.append(layers_mod.LAYERS[spec["class"]](**spec.get("config", {}), name=spec.get("name")))
            except (TypeError, ValueError) as e:
                raise CnnlabFileError(f"{source}: layer {i} ({spec['class']}): {e}") from None
        graph = any(isinstance(spec, dict) and "inbound" in spec for spec in config["layers"])
        loss = config.get("loss", {"name": "softmax", "config": {}})
        if not isinstance(loss, dict) or loss.get("name") not in losses_mod.LOSSES \
                or not isinstance(loss.get("config", {}), dict):
            raise CnnlabFileError(f"{source}: loss must be an object {{\"name\": one of {sorted(losses_mod.LOSSES)}, "
                                  f"\"config\": {{...}}}}, found {loss!r}")
        try:
            loss_obj = losses_mod.LOSSES[loss["name"]](**loss.get("config", {}))
            if not graph:
                return Sequential(built, input_shape=config.get("input_shape"), seed=config.get("seed", 0),
                                  loss=loss_obj, name=config.get("name", "sequential"))
            model = Model.__new__(Model)
            inbound, output = _graph_wiring(config, source)
            model._setup(built, inbound, output, config.get("seed", 0), loss_obj, config.get("name", "model"),
                         config.get("input_name", "input"))
            if config.get("input_shape") is not None:
                model.build(config["input_shape"])
            return model
        except (TypeError, ValueError, KeyError) as e:
            raise CnnlabFileError(f"{source}: {e}") from None

    # ---- training and inference ----------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, optimizer=None, loss=None, validation_data=None, verbose=1,
            shuffle=True, **trainer_options):
        """Train with mini-batch gradient descent; returns the history (a dict of per-epoch lists).

        ``loss`` is ``"softmax"`` (cross-entropy) or ``"svm"`` (multiclass hinge); see
        ``cnnlab.training.Trainer`` for the other options.
        """
        from .training import Trainer
        if loss is not None:
            self.loss = losses_mod.get(loss)
        trainer = Trainer(self, optimizer=optimizer, batch_size=batch_size, verbose=verbose, shuffle=shuffle,
                          **trainer_options)
        self.history = trainer.fit(x, y, epochs=epochs, validation_data=validation_data)
        return self.history

    def logits(self, x, batch_size=256, workers=None, comm=None) -> np.ndarray:
        """Raw class scores for every example, computed in batches (inference mode).

        ``workers`` cores share each batch (default: one per core, see ``cnnlab.parallel``). With an MPI
        communicator ``comm``, its ranks split the examples and every rank gets all the scores.
        """
        from .parallel import DataParallel
        x = self.check_input(x)
        check_int("batch_size", batch_size, self.name)
        if comm is not None:
            from . import distributed
            comm = distributed.world(comm)
            if comm is not None:
                return distributed.logits(self, x, comm, batch_size, workers)
        batch_size = min(int(batch_size), max(1, len(x)))          # no buffers for examples that do not exist
        resources.check_batch(self, batch_size, training=False)
        with DataParallel(self, workers, max_batch=batch_size) as dp:
            out = [dp.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0,) + self.output_shape, np.float32)

    def predict(self, x, batch_size=256, workers=None, comm=None) -> np.ndarray:
        """Class probabilities (N, classes): the softmax of the scores."""
        return losses_mod.softmax(self.logits(x, batch_size, workers, comm))

    def evaluate(self, x, y, batch_size=256, workers=None, comm=None) -> dict:
        """``{"loss": mean loss, "accuracy": fraction correct}`` on (x, y)."""
        scores = self.logits(x, batch_size, workers, comm)
        y = self.check_labels(y, len(scores))
        return {"loss": self.loss.forward(scores, y), "accuracy": float((scores.argmax(axis=1) == y).mean())}

    # ---- files -------------------------------------------------------------
    def save(self, path):
        """Write weights as safetensors with the architecture as JSON in its metadata (atomically; the format is
        ``cnnlab.model_file``'s). Returns the path."""
        self._require_built()
        return write_model_file(path, self)


class Sequential(Model):
    """A chain of layers. ``Sequential([Conv2D(6, 5), ReLU(), ...], input_shape=(28, 28, 1))``.

    ``seed`` fixes every random choice (initialization, dropout, shuffling):
    the same seed gives bit-identical training.
    """

    chain = True

    def __init__(self, layers, input_shape=None, seed: int = 0, loss="softmax", name: str = "sequential"):
        self._setup(list(layers), None, None, seed, loss, name)
        if input_shape is not None:
            self.build(input_shape)


def _graph_wiring(config, source):
    """``(inbound tensor numbers per layer, output tensor)`` from a graph architecture's layer names."""
    tensor = {config.get("input_name", "input"): 0}
    inbound = []
    for i, spec in enumerate(config["layers"]):
        reads = spec.get("inbound")
        if not isinstance(reads, list) or not reads or not all(isinstance(r, str) for r in reads):
            raise CnnlabFileError(f"{source}: layer {i} needs \"inbound\", a list of the names it reads, "
                                  f"received {reads!r}")
        unknown = [r for r in reads if r not in tensor]
        if unknown:
            raise CnnlabFileError(f"{source}: layer {i} reads {unknown}, which are neither the input nor earlier layers")
        inbound.append([tensor[r] for r in reads])
        if not isinstance(spec.get("name"), str) or spec["name"] in tensor:
            raise CnnlabFileError(f"{source}: layer {i} of a graph needs a unique name, received {spec.get('name')!r}")
        tensor[spec["name"]] = i + 1
    output = config.get("output", config["layers"][-1]["name"] if config["layers"] else None)
    if output not in tensor or output == config.get("input_name", "input"):
        raise CnnlabFileError(f"{source}: output {output!r} is not one of the layers")
    return inbound, tensor[output]


def load(path) -> Model:
    """Load a model saved by ``Model.save`` (a ``.safetensors`` file) or a run directory (its model file)."""
    config, tensors, path = read_model_file(path)
    model = Model.from_config(config, source=str(path))
    if not model.built:
        raise CnnlabFileError(f"{path}: the architecture has no input_shape")
    return model.load_state_dict(tensors, source=str(path))
