"""A finished ensemble as one Keras model: for test evaluation, and for serving once exported.

`EnsembleModel(members, ensembler, preprocessing)` calls every member in inference mode on the preprocessed batch and
mixes their logits with the (frozen) ensembler. It returns `logits`, `probabilities` and `classes`, plus every
member's logits when built with `with_member_logits=True` (evaluation reads them; serving does not need them).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from improve_nas.adanet.subnetwork import float32_outputs


@keras.saving.register_keras_serializable(package="improve_nas")
class EnsembleModel(keras.Model):
    """The ensemble's members, their mixture and an optional preprocessing layer, in inference mode.

    Args:
      members: the member models; each returns a dict with `"logits"` (and `"features"` for matrix weights).
      ensembler: the frozen ensembler, called as `ensembler(logits, features)`.
      member_names: one name per member (keys of the member logits output).
      preprocessing: layer applied to the raw input first (e.g. uint8 -> [-1, 1]); None for none.
      with_member_logits: also return `{"members": {name: logits}}`.
    """

    def __init__(self, *, members: Sequence[keras.Model], ensembler: keras.layers.Layer,
                 member_names: Sequence[str], preprocessing: keras.layers.Layer | None = None,
                 with_member_logits: bool = False, **kwargs):
        super().__init__(**kwargs)
        if len(members) != len(member_names):
            raise ValueError(f"{len(members)} members but {len(member_names)} names")
        self.members = list(members)
        self.ensembler = ensembler
        self.member_names = list(member_names)
        self.preprocessing = preprocessing
        self.with_member_logits = with_member_logits
        self._needs_features = getattr(ensembler, "weight_type", None) == "matrix"

    def call(self, images, training=False):
        x = images if self.preprocessing is None else self.preprocessing(images, training=False)
        outputs = [float32_outputs(member(x, training=False)) for member in self.members]  # any member precision
        logits = self.ensembler([o["logits"] for o in outputs],
                                [o["features"] for o in outputs] if self._needs_features else None)
        result = {"logits": logits, "probabilities": ops.softmax(logits, axis=-1),
                  "classes": ops.argmax(logits, axis=-1)}
        if self.with_member_logits:
            result["members"] = {name: o["logits"] for name, o in zip(self.member_names, outputs)}
        return result

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {**super().get_config(), "members": [serialize(m) for m in self.members],
                "ensembler": serialize(self.ensembler), "member_names": self.member_names,
                "preprocessing": None if self.preprocessing is None else serialize(self.preprocessing),
                "with_member_logits": self.with_member_logits}

    @classmethod
    def from_config(cls, config):
        deserialize = keras.saving.deserialize_keras_object
        config = dict(config)
        config["members"] = [deserialize(m) for m in config["members"]]
        config["ensembler"] = deserialize(config["ensembler"])
        if config.get("preprocessing") is not None:
            config["preprocessing"] = deserialize(config["preprocessing"])
        return cls(**config)
