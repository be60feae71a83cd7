demo:
	python recipes/LibriSpeech/ASR/CTC/train.py recipes/LibriSpeech/ASR/CTC/hparams/prune.yaml --data_folder=tests/samples/mini_librispeech --wav2vec2_hub=tests/samples/tiny_wav2vec2 --output_folder=results/demo --number_of_epochs=2 --device=cpu

test:
	pytest

.PHONY: demo test
