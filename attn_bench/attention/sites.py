"""The names of the places a block can work at (``models.placement`` defines where each one is)."""

# on a feature map, same shape out: where a block without an ``attn_sites`` attribute can work
FEATURE_SITES = ("residual", "mid", "stage_end", "trunk")
# a block must declare these: ``conv`` replaces a conv, ``input`` sees the image, ``convs`` comes before every conv
ALL_SITES = FEATURE_SITES + ("conv", "input", "convs")
