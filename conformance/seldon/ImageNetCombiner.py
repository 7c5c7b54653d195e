# Seldon Core v1.18.2's examples/models/openvino_imagenet_ensemble/resources/combiner/ImageNetCombiner.py (the combiner shown in Seldon's Python component docs), unchanged below this header:
# served as written by the conformance suite and tests/test_seldon_types.py.
# Copyright Seldon Technologies Ltd., Apache License 2.0.
import logging
import numpy as np
logger = logging.getLogger(__name__)

class ImageNetCombiner(object):

    def aggregate(self, Xs, features_names):
        print("ImageNet Combiner aggregate called")
        logger.debug(Xs)
        return (np.reshape(Xs[0],(1,-1)) + np.reshape(Xs[1], (1,-1)))/2.0

