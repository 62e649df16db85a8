"""Ma, Shen, Yu, Zhang, Song & Letaief (2022): neural calibration of the model-based ZF beamformer
(``neural_calibration``; see README.md)."""
