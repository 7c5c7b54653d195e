"""TF Serving's gRPC messages (``make proto``), kept in their own descriptor
pool: TensorFlow registers ``tensorflow.TensorProto`` and friends in the
default pool, and both must be importable in one process."""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _module in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)
