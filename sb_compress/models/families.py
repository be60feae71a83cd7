"""Adapters for wav2vec2, HuBERT, WavLM and Whisper (transformers models).

Authors
 * sb_compress team 2026
"""

from .base import ModelAdapter


class Wav2Vec2Adapter(ModelAdapter):
    """wav2vec2, HuBERT and WavLM: ``encoder.layers[i].attention`` and
    ``encoder.layers[i].feed_forward``.

    WavLM's ``gru_rel_pos_linear`` (relative position gating) is not a
    prunable role: it is small and read directly by the attention.
    """

    family = "wav2vec2"

    def _base(self):
        model = self.model
        for attr in ("wav2vec2", "hubert", "wavlm"):
            if hasattr(model, attr):
                return getattr(model, attr)
        return model

    def layer_stacks(self):
        """Returns ``{"encoder": encoder.layers}``."""
        return {"encoder": self._base().encoder.layers}

    def block_linears(self, block):
        """Returns the block's q, k, v, out, ffn_in and ffn_out Linears."""
        attention, ffn = block.attention, block.feed_forward
        return {
            "q": attention.q_proj,
            "k": attention.k_proj,
            "v": attention.v_proj,
            "out": attention.out_proj,
            "ffn_in": ffn.intermediate_dense,
            "ffn_out": ffn.output_dense,
        }

    def feature_extractor(self):
        """The convolutional front-end."""
        return self._base().feature_extractor


class WhisperAdapter(ModelAdapter):
    """Whisper: encoder and decoder layers, the decoder with cross-attention.

    Works on ``WhisperModel`` and ``WhisperForConditionalGeneration``, and on
    the SpeechBrain wrapper's model whose decoder was removed
    (``encoder_only=True``).
    """

    family = "whisper"

    def _base(self):
        return getattr(self.model, "model", self.model)

    def layer_stacks(self):
        """Returns the encoder layers, and the decoder layers if present."""
        base = self._base()
        stacks = {"encoder": base.encoder.layers}
        if getattr(base, "decoder", None) is not None:
            stacks["decoder"] = base.decoder.layers
        return stacks

    def block_linears(self, block):
        """Returns the block's Linears, cross-attention included."""
        attention = block.self_attn
        linears = {
            "q": attention.q_proj,
            "k": attention.k_proj,
            "v": attention.v_proj,
            "out": attention.out_proj,
        }
        cross = getattr(block, "encoder_attn", None)
        if cross is not None:
            linears.update(
                {
                    "cross_q": cross.q_proj,
                    "cross_k": cross.k_proj,
                    "cross_v": cross.v_proj,
                    "cross_out": cross.out_proj,
                }
            )
        linears["ffn_in"] = block.fc1
        linears["ffn_out"] = block.fc2
        return linears
