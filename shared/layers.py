"""Reusable Keras layers: the residual block that the vision and medical networks are built from."""

import keras


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
