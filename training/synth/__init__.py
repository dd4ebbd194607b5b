"""Offline synthetic corpus: espeak-ng speech with phoneme timings, labelled with ARKit curves
by a procedural teacher (`python -m training.synth --out DIR --minutes M --seed S`).

Modules: `phonemes` (the espeak -> ARPAbet table and phone classes), `espeak` (ctypes binding),
`sentences` (text generator), `styles` (emotions and persons), `features` (loudness, pitch),
`teacher` (phones -> curves), `corpus` (parallel, resumable corpus builder).
"""
