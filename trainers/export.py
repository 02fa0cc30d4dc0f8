"""Export a saved model for serving without Keras: ONNX graphs (float32 and int8) and a TensorFlow
SavedModel.

    python -m trainers.export --model saved_models/translate-spa-eng      # -> exports/translate-spa-eng
    python -m trainers.export --model saved_models/sentiment --format onnx savedmodel --out /tmp/sentiment

The folder it writes holds, for each function the task needs (`models.export`: the encoder and one
decoder step, the classifier, the prompt reader and one character step), `<name>.onnx` and
`int8/<name>.onnx`, with the vocabularies, settings and card of the saved model and `export.json`
(what each graph takes and returns). `runtime` serves it with NumPy and ONNX Runtime alone, with
the same Python API as `models/`. `keras-int8/` is the saved model quantised by Keras' own
`quantize("int8")`, a saved-model folder that `models/` loads. `--format savedmodel` adds
`saved_model/` (TF Serving), whose signatures are the same functions.

It runs on the JAX (default here) or TensorFlow backend: the saved model is the same file on every
backend, and torch cannot trace a recurrent layer for every length (`models.export`).
"""

from trainers import cli  # noqa: I001 - first: sets environment variables read when Keras/TensorFlow load

import contextlib
import os
import shutil
import time

os.environ.setdefault("KERAS_BACKEND", "jax")  # an export that works out of the box (torch cannot export)

import keras  # noqa: E402

from layers.recurrent import input_products_hoisted  # noqa: E402
from models import artifacts  # noqa: E402
from models.classifier import SentimentClassifier  # noqa: E402
from models.export import (  # noqa: E402
    check_backend,
    classification_endpoints,
    generation_endpoints,
    translation_endpoints,
    write_onnx,
)
from models.generator import CharGenerator  # noqa: E402
from models.translator import Translator  # noqa: E402
from runtime import files  # noqa: E402
from runtime.onnx import EXPORT_FILE, FORMAT_VERSION  # noqa: E402

FORMATS = ("onnx", "keras-int8", "savedmodel")
# task of the saved model's class -> (servable, endpoints of its network)
TASKS = {"translation": (Translator, lambda s: translation_endpoints(s.model)),
         "sentiment classification": (SentimentClassifier, lambda s: classification_endpoints(s.model)),
         "character generation": (CharGenerator, lambda s: generation_endpoints(s.model))}


def build_parser():
    p = cli.Parser(prog="python -m trainers.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the saved-model folder to export (saved_models/NAME)")
    p.add_argument("--out", help="the folder to write (default exports/NAME)")
    p.add_argument("--format", nargs="+", choices=FORMATS, default=["onnx", "keras-int8"],
                   help="onnx (with int8 versions), keras-int8 (a saved-model folder quantised by Keras' "
                        "quantize('int8'), served by models/), savedmodel (TensorFlow Serving); "
                        "default: onnx keras-int8")
    p.add_argument("--int8", action=cli.argparse.BooleanOptionalAction, default=True,
                   help="also write int8 ONNX graphs (ONNX Runtime dynamic quantisation of the weights; default on)")
    return p


def load_servable(directory):
    """The servable of a saved-model folder, whichever task it holds, and its task name."""
    config = artifacts.saved_config(os.path.join(directory, artifacts.MODEL_FILE)) \
        if os.path.isdir(directory) else None
    if config is None:
        raise artifacts.ArtifactError(f"no saved model at {directory!r} (expected a folder with "
                                      f"{artifacts.MODEL_FILE})")
    name = config.get("registered_name") or config.get("class_name") or ""
    found = keras.saving.get_registered_object(name)
    task = getattr(found, "TASK", None)
    if task not in TASKS:
        raise artifacts.ArtifactError(f"{directory!r} holds no model of this suite ({name or 'unknown class'})")
    return TASKS[task][0].load(directory), task


def export(directory, out, formats=("onnx", "keras-int8"), int8=True):
    """Export the saved model in `directory` to the folder `out` (replacing an earlier export there);
    returns the manifest. The files are written to a temporary folder first, so that a failed
    export leaves nothing half-made."""
    check_backend()
    out = os.path.normpath(out)
    if os.path.exists(out) and not os.path.isfile(os.path.join(out, EXPORT_FILE)) and os.listdir(out):
        raise cli.UsageError(f"{out!r} exists and is not an export folder: choose another --out")
    servable, task = load_servable(directory)
    partial = out + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        manifest = write_export(servable, task, directory, partial, formats, int8)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return manifest


def write_export(servable, task, directory, out, formats, int8):
    """Write the graphs, side files and `export.json` of `servable` into the empty folder `out`."""
    endpoints = TASKS[task][1](servable)
    backend = keras.backend.backend()
    for endpoint in endpoints:
        if backend not in endpoint.backends:
            print(f"note: {endpoint.name} is written from {' or '.join(endpoint.backends)} only; this export "
                  f"on {backend} goes without it (export with KERAS_BACKEND={endpoint.backends[0]} for it)")
    endpoints = [e for e in endpoints if backend in e.backends]
    manifest = {"format_version": FORMAT_VERSION, "task": task, "model": os.path.abspath(directory),
                "exported_with": {"backend": backend, "keras": keras.__version__},
                "config": servable.model.config.to_dict(), "endpoints": {e.name: e.manifest() for e in endpoints},
                "side_files": list(servable.SIDE_FILES), "onnx": False, "int8": False, "saved_model": None,
                "keras_int8": None}
    for name in [*servable.SIDE_FILES, artifacts.CARD_FILE]:
        if os.path.exists(os.path.join(directory, name)):
            shutil.copy(os.path.join(directory, name), out)
    if "onnx" in formats:
        for endpoint in endpoints:
            start = time.time()
            path = write_onnx(endpoint, os.path.join(out, f"{endpoint.name}.onnx"))
            print(f"{endpoint.name}.onnx: {os.path.getsize(path) / 1e6:.1f} MB ({time.time() - start:.0f} s)")
            if int8 and endpoint.quantize:
                small = quantize_int8(path, os.path.join(out, "int8", f"{endpoint.name}.onnx"))
                print(f"int8/{endpoint.name}.onnx: {os.path.getsize(small) / 1e6:.1f} MB")
            elif int8:  # kept float32 (models.export: the explanation graphs)
                os.makedirs(os.path.join(out, "int8"), exist_ok=True)
                shutil.copy(path, os.path.join(out, "int8", f"{endpoint.name}.onnx"))
        manifest["onnx"], manifest["int8"] = True, bool(int8)
    if "savedmodel" in formats:
        manifest["saved_model"] = write_saved_model(endpoints, os.path.join(out, "saved_model"))
        print(f"saved_model/: signatures {', '.join(manifest['saved_model'])}")
    if "keras-int8" in formats:
        servable.model.quantize("int8")  # last: the graphs above are of the float32 model
        card = {**getattr(servable, "card", {}), "quantized": "int8 weights of Dense and Embedding layers "
                                                            "(Keras quantize('int8')) by python -m trainers.export"}
        servable.save(os.path.join(out, "keras-int8"), card)
        manifest["keras_int8"] = "keras-int8"
        print(f"keras-int8/: {os.path.getsize(os.path.join(out, 'keras-int8', artifacts.MODEL_FILE)) / 1e6:.1f} MB")
    files.write_json(os.path.join(out, EXPORT_FILE), manifest)
    return manifest


def quantize_int8(path, out):
    """ONNX Runtime's dynamic quantisation: the weights of matrix products and embedding lookups as
    int8 with one scale each, activations quantised on the fly."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnxruntime.set_default_logger_severity(3)  # errors only: not the notes on unused initialisers

    os.makedirs(os.path.dirname(out), exist_ok=True)
    prepared = out + ".prepared.onnx"  # shapes inferred and the graph simplified first, as ONNX Runtime advises
    quant_pre_process(path, prepared, skip_symbolic_shape=True)
    quantize_dynamic(prepared, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather", "LSTM"],
                     extra_options={"EnableSubgraph": True})  # the recurrent loop's body too
    os.remove(prepared)
    return out


def write_saved_model(endpoints, path):
    """A TensorFlow SavedModel with one signature per endpoint (Keras' `ExportArchive`)."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(endpoints[0].model)
    # TensorFlow traces plain loops here, without its XLA-compiled kernel (a server may lack XLA).
    plain_loops = input_products_hoisted() if keras.backend.backend() == "tensorflow" else contextlib.nullcontext()
    with plain_loops:
        for endpoint in endpoints:
            signature = [tf.TensorSpec([d if isinstance(d, int) else None for d in shape], dtype, name=name)
                         for name, shape, dtype in endpoint.inputs]
            options = {}
            if keras.backend.backend() == "jax":  # the dimensions shared by name, as in the ONNX export
                options["jax2tf_kwargs"] = {"polymorphic_shapes": [
                    "(" + ", ".join(map(str, shape)) + ")" for _, shape, _ in endpoint.inputs]}
            archive.add_endpoint(endpoint.name, _named_outputs(endpoint), input_signature=signature, **options)
    archive.write_out(path, verbose=False)
    return [e.name for e in endpoints]


def _named_outputs(endpoint):
    def fn(*args):
        return dict(zip(endpoint.outputs, endpoint.fn(*args)))

    return fn


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = args.out or os.path.join("exports", os.path.basename(os.path.normpath(args.model)))
    manifest = export(args.model, out, args.format, args.int8)
    served = f" (serve it with runtime.load({out!r}), or --runtime onnx in the apps)" if manifest["onnx"] else ""
    print(f"exported to {out}{served}")
    return 0


if __name__ == "__main__":
    cli.run(main)
