"""Tiny models built from configs, saved as local transformers folders.

Used by the tests, the embedded samples and the docs: no hub, no network.
Each ``save_tiny_*`` writes a folder that ``from_pretrained`` and
SpeechBrain's wrappers (``source=<folder>``) load.

Authors
 * sb_compress team 2026
"""

import json
import os

import torch

WHISPER_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
    "<|0.00|>",
]


def _wav2vec2_like_config(config_class, hidden_size, layers, heads, ffn):
    return config_class(
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=32,
        do_stable_layer_norm=False,
        feat_extract_norm="group",
        num_buckets=16,
        max_bucket_distance=64,
    )


def save_tiny_ssl(
    path,
    family="wav2vec2",
    hidden_size=64,
    layers=2,
    heads=4,
    ffn=128,
    seed=0,
    with_ctc_head=False,
):
    """Saves a tiny wav2vec2 / HuBERT / WavLM model with its feature
    extractor.

    Arguments
    ---------
    path : str
        Output folder.
    family : str
        ``wav2vec2``, ``hubert`` or ``wavlm``.
    hidden_size, layers, heads, ffn : int
        Shapes of the transformer.
    seed : int
        Seed of the random weights.
    with_ctc_head : bool
        Save the ``*ForCTC`` model (with an ``lm_head``).

    Returns
    -------
    str
        ``path``.
    """
    import transformers as tf

    classes = {
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model, tf.Wav2Vec2ForCTC),
        "hubert": (tf.HubertConfig, tf.HubertModel, tf.HubertForCTC),
        "wavlm": (tf.WavLMConfig, tf.WavLMModel, tf.WavLMForCTC),
    }
    if family not in classes:
        raise ValueError(f"family={family!r}: one of {sorted(classes)}")
    config_class, model_class, ctc_class = classes[family]
    config = _wav2vec2_like_config(
        config_class, hidden_size, layers, heads, ffn
    )
    torch.manual_seed(seed)
    model = (ctc_class if with_ctc_head else model_class)(config)
    model.eval()
    model.save_pretrained(path)
    if with_ctc_head:
        _save_character_tokenizer(path)
    tf.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    ).save_pretrained(path)
    return path


#: wav2vec2's character vocabulary (32 entries: config.vocab_size).
CTC_VOCABULARY = (
    ["<pad>", "<s>", "</s>", "<unk>", "|"]
    + list("ETAONIHSRDLUMWCFGYPBVK")
    + ["'"]
    + list("XJQZ")
)


def _save_character_tokenizer(path):
    import transformers as tf

    vocab_file = os.path.join(path, "vocab.json")
    with open(vocab_file, "w") as f:
        json.dump({c: i for i, c in enumerate(CTC_VOCABULARY)}, f)
    tf.Wav2Vec2CTCTokenizer(vocab_file).save_pretrained(path)


def _save_byte_level_tokenizer(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(WHISPER_SPECIAL_TOKENS)
    tokenizer.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "WhisperTokenizer",
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "add_prefix_space": False,
                "model_max_length": 1024,
            },
            f,
            indent=2,
        )
    # Whisper's English normalizer reads its spelling map from here (the
    # real checkpoints ship ~1,700 British -> American entries).
    with open(os.path.join(path, "normalizer.json"), "w") as f:
        json.dump({"colour": "color"}, f)
    return len(vocab) + len(WHISPER_SPECIAL_TOKENS)


def save_tiny_whisper(path, d_model=64, layers=2, heads=4, ffn=128, seed=0):
    """Saves a tiny Whisper (encoder, decoder, byte-level tokenizer and
    feature extractor) that SpeechBrain's Whisper wrapper loads.

    Arguments
    ---------
    path : str
        Output folder.
    d_model, layers, heads, ffn : int
        Shapes of encoder and decoder.
    seed : int
        Seed of the random weights.

    Returns
    -------
    str
        ``path``.
    """
    import transformers as tf

    os.makedirs(path, exist_ok=True)
    vocab_size = _save_byte_level_tokenizer(path)
    eot = 256
    config = tf.WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_source_positions=1500,
        max_target_positions=128,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=eot + 1,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    torch.manual_seed(seed)
    model = tf.WhisperForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = eot + 1
    model.generation_config.forced_decoder_ids = None
    model.generation_config.no_timestamps_token_id = eot + 8
    model.eval()
    model.save_pretrained(path)
    tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path
