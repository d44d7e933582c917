"""TFDS builders (ArrayRecord) for jaxav's datasets.

- `synth_av.SynthAv`: the embedded default, procedurally generated audio + video clips
  (`synth_gen` holds the signal design);
- `audio_folder.AudioFolder`: a user's folder `root/<split>/<label>/*.wav` + `root/unlabeled/**`;
- `manifest.Manifest`: a CSV / JSONL manifest (`path`, optional `labels`, `split`, `frames`).

Use them through `jaxav.data.prepare` (`prepare_dataset`, `load_dataset`, `DATASETS`).
"""
