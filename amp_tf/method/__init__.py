"""The method: anchoring (`[c, x - c]`, the anchored model), the anchor transform T, the K-anchor predictor, the pixel statistics every model carries, the one batched inference loop.

Imports nothing itself: a command that reads only the light modules stays light."""
