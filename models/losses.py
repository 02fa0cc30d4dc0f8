"""Hand-written losses under `tf.distribute`: scaled as Keras scales its own.

Under a TensorFlow strategy (`--data-parallel`, or several processes with
`MultiWorkerMirroredStrategy`) every replica computes the loss of its share of the batch, and the
strategy *sums* the replicas' gradients. Keras' own losses are therefore divided by the number of
replicas (`keras.losses.Loss` does it when it reduces), and Keras multiplies the loss back before
it logs it. A loss we reduce ourselves (a token mean, an extra term added in `compute_loss`) must
be divided too, or the gradient is N times the mean's and the logged loss N times too large.
JAX's `DataParallel` computes one loss over the whole batch and torch's DDP averages the processes'
gradients itself: nothing to do there.
"""

import keras


def replica_share(loss):
    """`loss`, a mean over this replica's share of the batch, divided by the number of replicas in
    sync under a TensorFlow strategy (unchanged elsewhere and outside a strategy). Ours, because
    Keras' helper (`scale_loss_for_distribution`) is not public."""
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * (1.0 / replicas)
