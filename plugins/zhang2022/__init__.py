"""Zhang, You, Zheng, Krikidis & Zhao (2022): model-driven downlink beamforming learned from uplink
channel information, CSI-Net + Power-Net + the optimal beamforming structure (``model_driven``; see
README.md)."""
