"""Convert a torchvision ResNet-18, run it at several widths on a real photograph, and show
what each width costs. Random weights (nothing is downloaded): the point is the mechanics.

    python examples/slim_inference.py
"""

import torch
from skimage import data
from skimage.transform import resize

import usconvert
from usconvert.profile import active_parameters, count_macs

model, source = usconvert.create("tv:resnet18", num_classes=10)
net = usconvert.convert(model, (3, 128, 128), source=source)
print(net)

image = resize(data.astronaut(), (128, 128), anti_aliasing=True)  # a real photograph, HxWx3 in [0, 1]
x = torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0)

net.eval()
with torch.no_grad():
    print(f"{'width':>6} {'multiply-adds':>14} {'parameters':>11}  logits[:3]")
    for width in (1.0, 0.75, 0.5, 0.25):
        net.set_width(width)
        macs = count_macs(net).macs
        with net.sliced_statistics():  # uncalibrated: full-width statistics sliced, for the mechanics only
            logits = net(x)[0, :3].tolist()
        print(f"{width:>6} {macs / 1e6:>13.1f}M {active_parameters(net) / 1e6:>10.2f}M  "
              f"{[round(v, 3) for v in logits]}")

frozen = [s for s in net.spaces if s.frozen]
print(f"{len(net.spaces)} channel spaces, {len(frozen)} frozen: " +
      "; ".join(f"{s.name} ({s.frozen_reasons[0]})" for s in frozen))
