"""Building blocks, `keras.ops` only: recurrent cells and layers, and Bahdanau attention."""

from layers.cells import GRUCell, LSTMCell, RecurrentCell, SimpleRNNCell
from layers.autodiff import value_and_grad
from layers.recurrent import GRU, LSTM, Recurrent, SimpleRNN, run_recurrence

__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "Recurrent",
    "RecurrentCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "run_recurrence",
    "value_and_grad",
]
