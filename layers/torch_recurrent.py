"""PyTorch fast path of our recurrent layers: a whole sequence in one of ATen's fused RNN kernels.

On the torch backend our layers' generic time loop is a Python loop of small tensor operations
(torch has no compiled scan), so a step costs a dozen kernel launches and as many autograd nodes.
ATen's `lstm`, `gru` and `rnn_tanh`/`rnn_relu` (the kernels behind `torch.nn.LSTM/GRU/RNN`;
oneDNN's fused RNN on a CPU, cuDNN on a GPU) run the same recurrence, forward and backward, in one
call. `fused_recurrence` calls them with our weights in their layout, as Keras' own torch backend
does for its cuDNN path (`keras/src/backend/torch/rnn.py`):

- LSTM: the same gate order `i, f, c(g), o`; our bias is the input bias, the recurrent one zero.
- GRU with `reset_after=True` (PyTorch's only formulation): gates `z, r, h` -> `r, z, n`, our two
  bias rows as PyTorch's input and recurrent biases.
- SimpleRNN with tanh or relu: one bias, the recurrent one zero.

Masks: the kernels read whole sequences. A mask that is True on a prefix of each row (right
padding, every mask of this suite) is handled exactly around them: a backward layer reads each
row's valid steps reversed, the state after a row's last valid step is picked from the outputs,
and the masked steps' outputs follow the layer's contract (zeros with `zero_output_for_mask`,
else the carried state). An LSTM's final *cell* state after a shorter row is not in the outputs,
so a masked LSTM whose states are used (`return_state`, `stateful`) takes the generic path, as
does anything else the kernels do not compute: recurrent dropout, other activations, a GRU with
`reset_after=False`, a compute dtype other than float32, masks of another shape, tracing. The
generic path and this one are tested equal (`tests/test_torch_recurrent.py`).
"""

from keras import ops

from layers.cells import GRUCell, LSTMCell, SimpleRNNCell


def fused_recurrence(cell, sequences, initial_states, mask=None, go_backwards=False, zero_output_for_mask=False,
                     states_used=True):
    """`run_recurrence`'s result `(last_output (batch, units), outputs (batch, time, units), states)`
    from one fused kernel over `sequences (batch, time, features)` (input dropout already applied),
    or `None` where the kernels do not compute this layer (see the module docstring).

    `states_used`: whether the caller reads the final states (for a masked LSTM, see above).
    """
    import torch

    if torch.jit.is_tracing() or torch.compiler.is_compiling() or cell.compute_dtype != "float32":
        return None
    weights = _fused_weights(cell)
    if weights is None:
        return None
    kernel_name, params, has_biases = weights
    lengths = None
    if mask is not None:
        lengths = _prefix_lengths(mask)
        if lengths is None or (isinstance(cell, LSTMCell) and states_used):
            return None
    x = sequences.to(torch.float32)
    batch, steps = x.shape[0], x.shape[1]
    if go_backwards:
        # Backward reads each row's valid steps from the last; `order` is its own inverse, so it
        # also puts the outputs back where their inputs were.
        order = (torch.arange(steps - 1, -1, -1, device=x.device).expand(batch, steps) if lengths is None
                 else _reversed_within(lengths, steps))
        x = _gather_steps(x, order)
    hidden = tuple(ops.convert_to_tensor(s).to(torch.float32).unsqueeze(0) for s in initial_states)
    kernel = getattr(torch._VF, kernel_name)
    results = kernel(x, hidden if len(hidden) > 1 else hidden[0], params, has_biases, 1, 0.0,
                     torch.is_grad_enabled(), False, True)  # layers, dropout, train, bidirectional, batch_first
    outputs, final = results[0], [s.squeeze(0) for s in results[1:]]  # outputs (batch, time, units)
    if go_backwards:
        outputs = _gather_steps(outputs, order)  # back to the inputs' positions
    if lengths is not None:
        outputs, h = _masked_contract(outputs, initial_states[0], mask, lengths, go_backwards, zero_output_for_mask)
        # The kernel's final cell state is the one after each row's *end*, not after its last valid
        # step; it is unread here (`states_used=False`), so it is NaN rather than quietly wrong.
        final = [h] + [torch.full_like(c, float("nan")) for c in final[1:]]
    if go_backwards:  # the layer returns outputs in processing order
        outputs = torch.flip(outputs, dims=[1])
    return outputs[:, -1], outputs, final


def _fused_weights(cell):
    """`(ATen kernel name, [w_ih, w_hh, b_ih, b_hh] or [w_ih, w_hh], has_biases)` of `cell` in
    PyTorch's layout, or `None` for a cell the kernels do not compute."""
    import torch

    name = lambda fn: getattr(fn, "__name__", "")  # noqa: E731
    gated = isinstance(cell, (LSTMCell, GRUCell))
    if gated and (name(cell.activation) != "tanh" or name(cell.recurrent_activation) != "sigmoid"):
        return None
    if isinstance(cell, GRUCell) and not cell.reset_after:
        return None
    if isinstance(cell, SimpleRNNCell):
        if name(cell.activation) not in ("tanh", "relu"):
            return None
        kernel_name = "rnn_" + name(cell.activation)
    elif gated:
        kernel_name = "lstm" if isinstance(cell, LSTMCell) else "gru"
    else:
        return None
    kernel, recurrent_kernel = (ops.convert_to_tensor(w) for w in (cell.kernel, cell.recurrent_kernel))
    if kernel.dtype != torch.float32:
        return None
    bias = ops.convert_to_tensor(cell.bias) if cell.use_bias else None
    input_bias, recurrent_bias = (bias[0], bias[1]) if isinstance(cell, GRUCell) and bias is not None else (
        bias, None if bias is None else torch.zeros_like(bias))
    if isinstance(cell, GRUCell):  # Keras z, r, h -> PyTorch r, z, n
        swap = lambda w: torch.cat([w[..., cell.units:2 * cell.units], w[..., :cell.units],  # noqa: E731
                                    w[..., 2 * cell.units:]], dim=-1)
        kernel, recurrent_kernel = swap(kernel), swap(recurrent_kernel)
        input_bias, recurrent_bias = (None, None) if bias is None else (swap(input_bias), swap(recurrent_bias))
    params = [kernel.t(), recurrent_kernel.t()]  # (gates units, input_dim), (gates units, units)
    if bias is not None:
        params += [input_bias, recurrent_bias]
    return kernel_name, params, bias is not None


def _prefix_lengths(mask):
    """`(batch,)` int64 lengths if `mask (batch, time)` is True on a prefix of each row, else `None`."""
    import torch

    mask = ops.convert_to_tensor(mask).to(torch.bool)
    if mask.ndim != 2:
        return None
    lengths = mask.sum(dim=1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    return lengths if bool(torch.equal(prefix, mask)) else None


def _reversed_within(lengths, steps):
    """`(batch, time)` step indices that reverse each row's first `lengths[b]` steps and keep the rest."""
    import torch

    t = torch.arange(steps, device=lengths.device)[None, :]
    return torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)


def _gather_steps(x, order):
    """`x[b, order[b, t]]` for `x (batch, time, features)` and `order (batch, steps)`."""
    import torch

    return torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _masked_contract(outputs, initial_h, mask, lengths, go_backwards, zero_output_for_mask):
    """`(outputs, h)`: the layer's outputs (batch, time, units) and final hidden state (batch, units)
    from a kernel that ran each row to its end: the state after a row's last valid step, and the
    masked steps' outputs per the layer's contract."""
    import torch

    # The output of the last valid step: at `length - 1` forward, at position 0 backward
    # (the outputs are at their inputs' positions here). An empty row keeps its initial state.
    last = torch.clamp(lengths - 1, min=0) if not go_backwards else torch.zeros_like(lengths)
    h0 = ops.convert_to_tensor(initial_h).to(outputs.dtype)
    h = torch.where((lengths > 0)[:, None], _gather_steps(outputs, last[:, None])[:, 0], h0)
    valid = ops.convert_to_tensor(mask).to(torch.bool)[:, :, None]
    if zero_output_for_mask:
        outputs = torch.where(valid, outputs, torch.zeros_like(outputs))
    else:
        # A masked step repeats the state carried to it: the final one after a forward pass, the
        # initial one before a backward pass (which reads the padding first).
        carried = h if not go_backwards else h0
        outputs = torch.where(valid, outputs, carried[:, None, :])
    return outputs, h
