"""Building blocks, `keras.ops` only: recurrent cells and layers, and Bahdanau attention
(`layers.onnx_recurrent`: the recurrent layers as ONNX operators, for a JAX export)."""

from layers.attention import BahdanauAttention
from layers.autodiff import value_and_grad
from layers.cells import GRUCell, LSTMCell, RecurrentCell, SimpleRNNCell
from layers.pooling import MaskedMeanMaxPooling
from layers.recurrent import CELLS, GRU, LSTM, Recurrent, SimpleRNN, recurrent_layer_class, run_recurrence

__all__ = [
    "BahdanauAttention",
    "CELLS",
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "MaskedMeanMaxPooling",
    "Recurrent",
    "RecurrentCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "recurrent_layer_class",
    "run_recurrence",
    "value_and_grad",
]
