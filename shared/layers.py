"""Reusable Keras layers: the residual block, fused batch normalisation, random resized crops
and the Transformer encoder pieces."""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="deepfield")
class ResidualBlock(keras.layers.Layer):
    """The basic residual block of He et al. (2016): two 3x3 convolutions and a shortcut.

    conv(stride) -> BN -> ReLU -> conv -> BN, added to the input (through a 1x1 convolution with
    BN when the stride or the channel count changes), then ReLU.

    Args:
        filters: output channels.
        strides: stride of the first convolution (2 halves the height and width).
        kernel_size: size of both convolutions.
        l2: L2 weight penalty on the convolution kernels (0: none).
        momentum: momentum of the batch-normalisation moving statistics (0.9 settles within a
            few hundred steps, which small datasets need; Keras's default 0.99 does not).
    """

    def __init__(self, filters, strides=1, kernel_size=3, l2=0.0, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"`filters` must be a positive integer. Received: filters={filters}")
        if strides not in (1, 2):
            raise ValueError(f"`strides` must be 1 or 2. Received: strides={strides}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"`kernel_size` must be a positive odd integer. Received: kernel_size={kernel_size}"
            )
        if l2 < 0:
            raise ValueError(f"`l2` must be >= 0. Received: l2={l2}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        self.filters = filters
        self.strides = strides
        self.kernel_size = kernel_size
        self.l2 = l2
        self.momentum = momentum
        regularizer = keras.regularizers.L2(l2) if l2 else None
        conv = {"padding": "same", "use_bias": False, "kernel_regularizer": regularizer}
        self.conv1 = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, dtype=self.dtype_policy, **conv
        )
        self.bn1 = keras.layers.BatchNormalization(momentum=momentum, dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(filters, kernel_size, dtype=self.dtype_policy, **conv)
        self.bn2 = keras.layers.BatchNormalization(momentum=momentum, dtype=self.dtype_policy)
        self.shortcut_conv = None
        self.shortcut_bn = None

    def build(self, input_shape):
        channels = input_shape[-1]
        self.conv1.build(input_shape)
        mid_shape = self.conv1.compute_output_shape(input_shape)
        self.bn1.build(mid_shape)
        self.conv2.build(mid_shape)
        self.bn2.build(mid_shape)
        if self.strides != 1 or channels != self.filters:
            self.shortcut_conv = keras.layers.Conv2D(
                self.filters,
                1,
                strides=self.strides,
                use_bias=False,
                kernel_regularizer=keras.regularizers.L2(self.l2) if self.l2 else None,
                dtype=self.dtype_policy,
            )
            self.shortcut_bn = keras.layers.BatchNormalization(
                momentum=self.momentum, dtype=self.dtype_policy
            )
            self.shortcut_conv.build(input_shape)
            self.shortcut_bn.build(mid_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = self.conv1(inputs)
        x = keras.ops.relu(self.bn1(x, training=training))
        x = self.bn2(self.conv2(x), training=training)
        shortcut = inputs
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_bn(self.shortcut_conv(inputs), training=training)
        return keras.ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "kernel_size": self.kernel_size,
                "l2": self.l2,
                "momentum": self.momentum,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="deepfield")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training pass over a 4-D channels-last batch is
    TensorFlow's one fused kernel (FusedBatchNormV3 and its gradient op).

    Keras 3 normalises with separate moments, subtract, scale and shift ops, and each is a pass
    over the feature map forwards and backwards; on a 2-core CPU that made a small photo CNN's
    step about a tenth slower and its first epoch about 0.2 s longer to trace. The arithmetic
    is Keras's: the batch's biased variance normalises and feeds the moving variance. Inference,
    other ranks, masks and renormalisation take Keras's own path, so the exported graph is the
    same.
    """

    def call(self, inputs, training=None, mask=None):
        fused = (
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.scale
            and self.center
        )
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, "float32")
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x,
            tf.cast(self.gamma, "float32"),
            tf.cast(self.beta, "float32"),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        # The op returns the unbiased (n - 1) variance for the moving average; Keras keeps the
        # biased one, which is what normalised the batch.
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, inputs.dtype)


@keras.saving.register_keras_serializable(package="deepfield")
class RandomResizedCrop(keras.layers.Layer):
    """Random resized crops (Szegedy et al. 2015; torchvision's RandomResizedCrop), while
    training only: each image is cut to a random box covering `scale` of its area with an aspect
    ratio in `ratio` (the box kept inside the image), and the box resized back to the input's
    size. Inference passes images through.

    One zoom-and-shift per image in a single `crop_and_resize` op: on a small CPU network,
    RandomZoom followed by RandomTranslation (two projective transforms) cost about 1.5 s more to
    trace and a tenth more per step.

    Args:
        scale: (low, high) fraction of the image's area a crop covers, 0 < low <= high <= 1.
        ratio: (low, high) width / height of a crop, 0 < low <= high.
        seed: seed of the layer's random draws.
    """

    def __init__(self, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        super().__init__(**kwargs)
        scale, ratio = tuple(float(v) for v in scale), tuple(float(v) for v in ratio)
        if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"`scale` must be (low, high) in (0, 1]. Received: scale={scale}")
        if len(ratio) != 2 or not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"`ratio` must be (low, high) > 0. Received: ratio={ratio}")
        self.scale, self.ratio, self.seed = scale, ratio, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False  # like Keras's own random image layers

    def call(self, images, training=None):
        if not training:
            return images
        n = keras.ops.shape(images)[0]
        area = keras.random.uniform((n,), *self.scale, seed=self.seed_generator)
        log_ratio = keras.random.uniform(
            (n,), math.log(self.ratio[0]), math.log(self.ratio[1]), seed=self.seed_generator
        )
        aspect = keras.ops.exp(log_ratio)
        # Side lengths as fractions of the image's height and width, at most the whole image.
        height = keras.ops.minimum(keras.ops.sqrt(area / aspect), 1.0)
        width = keras.ops.minimum(keras.ops.sqrt(area * aspect), 1.0)
        top = keras.random.uniform((n,), seed=self.seed_generator) * (1.0 - height)
        left = keras.random.uniform((n,), seed=self.seed_generator) * (1.0 - width)
        boxes = keras.ops.stack([top, left, top + height, left + width], axis=1)
        size = tf.shape(images)[1:3]
        crops = tf.image.crop_and_resize(
            tf.cast(images, "float32"), boxes, tf.range(n), size, method="bilinear"
        )
        return tf.cast(crops, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {
            "scale": list(self.scale),
            "ratio": list(self.ratio),
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="deepfield")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position embedding, for sequences of integer token ids.

    Token id 0 is padding: with `mask_zero` the layer emits a mask so that attention and pooling
    downstream ignore the padded positions.

    Args:
        vocabulary_size: number of token ids (ids must be < this).
        sequence_length: longest sequence the position table covers.
        embedding_dim: width of both embeddings.
        mask_zero: treat id 0 as padding and propagate a mask.
    """

    def __init__(self, vocabulary_size, sequence_length, embedding_dim, mask_zero=True, **kwargs):
        super().__init__(**kwargs)
        for name, value in (
            ("vocabulary_size", vocabulary_size),
            ("sequence_length", sequence_length),
            ("embedding_dim", embedding_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.embedding_dim = embedding_dim
        self.mask_zero = mask_zero
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size, embedding_dim, dtype=self.dtype_policy, name="token"
        )
        self.position_embedding = keras.layers.Embedding(
            sequence_length, embedding_dim, dtype=self.dtype_policy, name="position"
        )
        self.supports_masking = mask_zero

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embedding.build(input_shape)
        self.built = True

    def call(self, inputs):
        length = keras.ops.shape(inputs)[-1]
        positions = keras.ops.arange(0, length, dtype="int32")
        return self.token_embedding(inputs) + self.position_embedding(positions)

    def compute_mask(self, inputs, mask=None):
        return keras.ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length,
                "embedding_dim": self.embedding_dim,
                "mask_zero": self.mask_zero,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="deepfield")
class TransformerBlock(keras.layers.Layer):
    """A post-norm Transformer encoder block (Vaswani et al., 2017).

    Multi-head self-attention, dropout, residual and layer norm; then a two-layer feed-forward
    network, dropout, residual and layer norm. A padding mask arriving with the input (from
    TokenAndPositionEmbedding) keeps attention off the padded positions.

    Args:
        embedding_dim: width of the input and output (the model width).
        num_heads: attention heads; `embedding_dim` must divide by it.
        feed_forward_dim: hidden width of the feed-forward network.
        dropout: dropout rate after attention and after the feed-forward network.
    """

    def __init__(self, embedding_dim, num_heads, feed_forward_dim, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        for name, value in (
            ("embedding_dim", embedding_dim),
            ("num_heads", num_heads),
            ("feed_forward_dim", feed_forward_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
        if embedding_dim % num_heads:
            raise ValueError(
                "`embedding_dim` must be divisible by `num_heads`. "
                f"Received: embedding_dim={embedding_dim}, num_heads={num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.feed_forward_dim = feed_forward_dim
        self.dropout = dropout
        policy = self.dtype_policy
        self.attention = keras.layers.MultiHeadAttention(
            num_heads, embedding_dim // num_heads, dtype=policy, name="attention"
        )
        self.feed_forward_in = keras.layers.Dense(
            feed_forward_dim, activation="relu", dtype=policy, name="ffn_in"
        )
        self.feed_forward_out = keras.layers.Dense(embedding_dim, dtype=policy, name="ffn_out")
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name="norm1")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name="norm2")
        self.dropout1 = keras.layers.Dropout(dropout, dtype=policy)
        self.dropout2 = keras.layers.Dropout(dropout, dtype=policy)
        self.supports_masking = True

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)
        self.norm1.build(input_shape)
        self.feed_forward_in.build(input_shape)
        self.feed_forward_out.build((*input_shape[:-1], self.feed_forward_dim))
        self.norm2.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        attention_mask = None
        if mask is not None:
            # (batch, 1, length): every query may attend to every non-padded key.
            attention_mask = keras.ops.expand_dims(keras.ops.cast(mask, "bool"), axis=1)
        attended = self.attention(inputs, inputs, attention_mask=attention_mask, training=training)
        x = self.norm1(inputs + self.dropout1(attended, training=training))
        hidden = self.feed_forward_out(self.feed_forward_in(x))
        return self.norm2(x + self.dropout2(hidden, training=training))

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embedding_dim": self.embedding_dim,
                "num_heads": self.num_heads,
                "feed_forward_dim": self.feed_forward_dim,
                "dropout": self.dropout,
            }
        )
        return config
