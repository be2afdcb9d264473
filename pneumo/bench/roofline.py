"""Roofline: MACs counted from the ONNX graph vs this machine's measured attainable rates.

- `count_macs` walks the graph after ONNX shape inference (batch fixed to 1) and counts
  multiply-accumulates of Conv (out_h*out_w*out_c * k_h*k_w*in_c/group), ConvInteger,
  QLinearConv, MatMul, MatMulInteger, QLinearMatMul and Gemm. Element-wise ops are not counted.
- `attainable_rates` times matching microbenchmarks in ONNX Runtime: a large 3x3 Conv and a
  large MatMul, each in fp32 and as a static QDQ int8 graph (int8 per-channel weights, uint8
  activations: the same scheme `export.quantize` produces, which ORT fuses into QLinearConv /
  QLinearMatMul), plus a numpy copy for memory bandwidth.
- efficiency = achieved MAC/s (MACs x batch / p50) / attainable MAC/s at the same precision
  and thread count.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo.bench.timing import Settings, measure

if TYPE_CHECKING:
    import onnx

    from pneumo.bench.models import ModelSet

log = logging.getLogger(__name__)

CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}  # op -> index of the weight input
MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3),
              "Gemm": (0, 1)}
_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}


def missing_onnx_note() -> str | None:
    """Why the section cannot run here (it reads graphs with `onnx`), or None when it can."""
    from pneumo.extras import INSTALL_HINT

    if importlib.util.find_spec("onnx") is None:
        return f"needs the training packages (onnx): {INSTALL_HINT}"
    return None


def _fix_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """A copy of the model whose symbolic input dims are set to `batch`."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    init_names = {i.name for i in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in init_names:
            continue
        for d in inp.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.Clear()
                d.dim_value = batch
    return m


def tensor_shapes(model: onnx.ModelProto) -> tuple[dict[str, list[int | None]], dict[str, int]]:
    """(name -> shape, name -> element type) for every tensor, after shape inference."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(_fix_batch(model), data_prop=True)
    shapes: dict[str, list[int | None]] = {}
    dtypes: dict[str, int] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                           for d in tt.shape.dim]
        dtypes[vi.name] = tt.elem_type
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        dtypes[init.name] = init.data_type
    return shapes, dtypes


def _prod(shape: list[int | None] | None) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _attr(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def count_macs(model_or_path: onnx.ModelProto | str | Path) -> dict:
    """Multiply-accumulates per image of a model (ONNX ModelProto or path)."""
    import onnx

    model = (onnx.load(str(model_or_path), load_external_data=False)
             if isinstance(model_or_path, (str, Path)) else model_or_path)
    shapes, _ = tensor_shapes(model)
    total, per_node, unknown = 0, [], []
    for node in model.graph.node:
        macs = None
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type in CONV_OPS:
            w = shapes.get(node.input[CONV_OPS[node.op_type]])
            if w is not None and out is not None and len(w) >= 3 and _prod(out) is not None:
                # weight [out_c, in_c/group, k...]: per output element in_c/group * prod(k)
                macs = _prod(out) * _prod(w[1:])
        elif node.op_type in MATMUL_OPS:
            ia, _ = MATMUL_OPS[node.op_type]
            a = shapes.get(node.input[ia])
            if a is not None and out is not None and _prod(out) is not None and a:
                if node.op_type == "Gemm" and _attr(node, "transA"):
                    k = a[0]
                else:
                    k = a[-1]
                if k is not None:
                    macs = _prod(out) * k
        else:
            continue
        if macs is None:
            unknown.append(node.name or node.op_type)
            continue
        total += int(macs)
        per_node.append({"name": node.name, "op": node.op_type, "macs": int(macs)})
    return {"macs_per_image": int(total), "nodes": per_node, "uncounted": unknown}


def traffic_bytes(model_or_path: onnx.ModelProto | str | Path) -> int:
    """Rough DRAM traffic per image: input and weights read once, every Conv/MatMul output
    written and read once (1 byte per element where it feeds a QuantizeLinear)."""
    import onnx

    model = (onnx.load(str(model_or_path), load_external_data=False)
             if isinstance(model_or_path, (str, Path)) else model_or_path)
    shapes, dtypes = tensor_shapes(model)
    g = model.graph
    quantized = {n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    total = sum(int(np.prod(i.dims, dtype=np.int64)) * _DTYPE_BYTES.get(i.data_type, 4)
                for i in g.initializer)
    init_names = {i.name for i in g.initializer}
    for inp in g.input:
        if inp.name not in init_names:
            total += (_prod(shapes.get(inp.name)) or 0) * _DTYPE_BYTES.get(dtypes.get(inp.name), 4)
    for node in g.node:
        if node.op_type not in CONV_OPS and node.op_type not in MATMUL_OPS:
            continue
        name = node.output[0]
        n = _prod(shapes.get(name))
        if n is None:
            continue
        size = 1 if name in quantized else _DTYPE_BYTES.get(dtypes.get(name, 1), 4)
        total += 2 * n * size
    return int(total)


# ---------------------------------------------------------------- microbenchmark models


def conv_model(precision: str, channels: int = 128, hw: int = 56, batch: int = 1,
               layers: int = 4) -> onnx.ModelProto:
    """A chain of 3x3 same-padding Conv(+Relu) layers (NCHW), fp32 or a QDQ int8 graph.

    A chain, like the real network, so that the int8 graph stays in uint8 between layers
    and the fp32 <-> uint8 conversions at its ends are amortised.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = channels
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, c, hw, hw])
    conv_attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes, inits = [], [numpy_helper.from_array(np.zeros(c, np.float32), "b")]
    if precision != "fp32":
        inits += _act_params()
        nodes += _qdq_act("x", "h0")
    else:
        nodes.append(helper.make_node("Identity", ["x"], ["h0"]))
    for i in range(layers):
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.05
        src, dst = f"h{i}", ("y" if i == layers - 1 else f"h{i + 1}")
        if precision == "fp32":
            inits.append(numpy_helper.from_array(w, f"w{i}"))
            nodes += [helper.make_node("Conv", [src, f"w{i}", "b"], [f"c{i}"], **conv_attrs),
                      helper.make_node("Relu", [f"c{i}"], [dst])]
        else:
            wn, wi = _qdq_weights(w, axis=0, prefix=f"w{i}")
            # no Relu: export.quantize folds it into the uint8 QuantizeLinear, as here
            nodes += wn + [helper.make_node("Conv", [src, f"w{i}_dq", "b"], [f"c{i}"],
                                            **conv_attrs),
                           *_qdq_act(f"c{i}", dst)]
            inits += wi
    graph = helper.make_graph(nodes, f"conv_{precision}", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def matmul_model(precision: str, m: int = 256, k: int = 1024, layers: int = 4
                 ) -> onnx.ModelProto:
    """A chain of [m, k] x [k, k] MatMuls, fp32 or a QDQ int8 graph."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, k])
    nodes, inits = [], []
    if precision != "fp32":
        inits += _act_params()
        nodes += _qdq_act("x", "h0")
    else:
        nodes.append(helper.make_node("Identity", ["x"], ["h0"]))
    for i in range(layers):
        w = rng.standard_normal((k, k)).astype(np.float32) * 0.05
        src, dst = f"h{i}", ("y" if i == layers - 1 else f"h{i + 1}")
        if precision == "fp32":
            inits.append(numpy_helper.from_array(w, f"w{i}"))
            nodes.append(helper.make_node("MatMul", [src, f"w{i}"], [dst]))
        else:
            wn, wi = _qdq_weights(w, axis=1, prefix=f"w{i}")
            nodes += wn + [helper.make_node("MatMul", [src, f"w{i}_dq"], [f"c{i}"]),
                           *_qdq_act(f"c{i}", dst)]
            inits += wi
    graph = helper.make_graph(nodes, f"matmul_{precision}", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _qdq_weights(w: np.ndarray, axis: int, prefix: str = "w"
                 ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Per-channel symmetric int8 weights and their DequantizeLinear node."""
    from onnx import helper, numpy_helper

    red = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=red) / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    wq = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    zp = np.zeros_like(scale, dtype=np.int8)
    inits = [numpy_helper.from_array(wq, f"{prefix}_q"),
             numpy_helper.from_array(scale, f"{prefix}_scale"),
             numpy_helper.from_array(zp, f"{prefix}_zp")]
    node = helper.make_node("DequantizeLinear", [f"{prefix}_q", f"{prefix}_scale", f"{prefix}_zp"],
                            [f"{prefix}_dq"], axis=axis)
    return [node], inits


def _act_params() -> list[onnx.TensorProto]:
    from onnx import numpy_helper

    return [numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "a_zp")]


def _qdq_act(src: str, dst: str) -> list[onnx.NodeProto]:
    """uint8 Quantize -> Dequantize pair on an activation."""
    from onnx import helper

    return [helper.make_node("QuantizeLinear", [src, "a_scale", "a_zp"], [f"{src}_q"]),
            helper.make_node("DequantizeLinear", [f"{src}_q", "a_scale", "a_zp"], [dst])]


def _time_model(model: onnx.ModelProto, threads: int, settings: Settings) -> tuple[float, float]:
    """(MACs, p50 seconds) of one microbenchmark model in ORT."""
    import onnxruntime as ort

    macs = count_macs(model)["macs_per_image"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(1).standard_normal(inp.shape).astype(np.float32)
    stats = measure(lambda: sess.run(None, {"x": x}), settings)
    return macs, stats.p50 / 1000.0


def memory_bandwidth_gbs(mib: int = 128, settings: Settings | None = None) -> float:
    """Single-thread copy bandwidth (read + write bytes per second) in GB/s."""
    a = np.ones(mib * 2**20 // 8, np.float64)
    b = np.empty_like(a)
    stats = measure(lambda: np.copyto(b, a), settings or Settings(warmup=1, repeat=5))
    return 2 * a.nbytes / (stats.p50 / 1000.0) / 1e9


def attainable_rates(threads: tuple[int, ...], settings: Settings, *, small: bool = False) -> dict:
    """Measured MAC/s of the conv and matmul microbenchmarks per precision and thread count."""
    conv_kw = {"channels": 64, "hw": 56} if small else {"channels": 128, "hw": 56}
    mm_kw = {"m": 128, "k": 512} if small else {"m": 256, "k": 1024}
    out: dict = {"micro": [], "peak": {}}
    for t in threads:
        for prec in ("fp32", "int8"):
            best = 0.0
            for kind, model in (("conv3x3", conv_model(prec, **conv_kw)),
                                ("matmul", matmul_model(prec, **mm_kw))):
                macs, sec = _time_model(model, t, settings)
                rate = macs / sec
                best = max(best, rate)
                shape = conv_kw if kind == "conv3x3" else mm_kw
                out["micro"].append({"kind": kind, "precision": prec, "threads": t,
                                     "shape": shape, "macs": macs, "p50_ms": sec * 1000,
                                     "gmacs": rate / 1e9})
                log.info(f"  micro {kind:8s} {prec} t{t}: {rate / 1e9:7.1f} GMAC/s")
            out["peak"][f"{prec}|t{t}"] = best
    return out


def run(models: ModelSet, latency: dict, threads: tuple[int, ...], settings: Settings, *,
        small: bool = False, all_cores: int | None = None) -> dict:
    """The roofline section: MACs per model, attainable rates, efficiency of every latency row."""
    counts: dict[str, dict] = {}
    for e in models.onnx:
        c = count_macs(e.path)
        counts[e.key] = {"macs_per_image": c["macs_per_image"], "uncounted": c["uncounted"],
                         "traffic_bytes_per_image": traffic_bytes(e.path),
                         "precision": e.precision, "label": e.label}
    t0 = time.perf_counter()
    rates = attainable_rates(threads, settings, small=small)
    bw = memory_bandwidth_gbs(64 if small else 256)
    log.info(f"  memory copy bandwidth {bw:.1f} GB/s "
             f"({time.perf_counter() - t0:.1f} s of microbenchmarks)")
    twins = {k.key: k.twin for k in models.keras}
    rows = []
    for r in latency.get("rows", []):
        key = twins.get(r["model"], r["model"])
        c = counts.get(key) or counts.get("model-int8" if key == "model-fp32" else "")
        if not c:
            continue
        t = (all_cores or max(threads)) if r["threads"] == "tf" else r["threads"]
        peak = rates["peak"].get(f"{r['precision']}|t{t}")
        if not peak:
            continue
        achieved = c["macs_per_image"] * r["batch"] / (r["stats"]["p50"] / 1000.0)
        ai = c["macs_per_image"] / max(c["traffic_bytes_per_image"], 1)
        rows.append({"id": r["id"], "label": r["label"], "runtime": r["runtime"],
                     "precision": r["precision"], "batch": r["batch"], "threads": r["threads"],
                     "macs_per_image": c["macs_per_image"], "achieved_gmacs": achieved / 1e9,
                     "attainable_gmacs": peak / 1e9, "efficiency": achieved / peak,
                     "arithmetic_intensity_mac_per_byte": ai,
                     "memory_bound_gmacs": ai * bw,
                     "bound": "memory" if ai * bw * 1e9 < peak else "compute"})
    return {"status": "ok", "models": counts, "attainable": rates,
            "memory_bandwidth_gbs": bw, "rows": rows,
            "notes": ["MACs counted from Conv/MatMul/Gemm nodes after ONNX shape inference "
                      "(batch 1); element-wise ops not counted.",
                      "Attainable = the faster of a chain of four large 3x3 Convs and a chain of "
                      "four large MatMuls (QDQ for int8) in ORT at the same precision and "
                      "thread count; Keras rows use the fp32 figure at all cores.",
                      "Efficiency above 100% means the model's layers suit the kernels better "
                      "than the microbenchmark shapes, or the microbenchmark was disturbed by "
                      "other load.",
                      "Memory bound: rough arithmetic intensity (input and weights read once, "
                      "every Conv/MatMul output written and read once) x single-thread copy "
                      "bandwidth."]}
