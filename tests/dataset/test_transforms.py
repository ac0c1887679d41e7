"""The training transforms: the two-tower reference's augmentation (BASELINE spec §B4)."""
import torch
from PIL import Image
from torchvision import transforms as T

from dataset.transforms import image_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_crop_flip_jitter_resizes_to_256_crops_224_flips_and_jitters():
    transform = image_transform(224, MEAN, STD, train=True, kind="crop_flip_jitter")
    resize, crop, flip, jitter = transform.transforms[:4]
    assert isinstance(resize, T.Resize) and tuple(resize.size) == (256, 256)
    assert isinstance(crop, T.RandomCrop) and tuple(crop.size) == (224, 224)
    assert isinstance(flip, T.RandomHorizontalFlip)
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.8, 1.2), (0.8, 1.2),
                                                                                  (0.8, 1.2), (-0.1, 0.1))
    image = Image.new("RGB", (300, 200), (120, 60, 30))
    torch.manual_seed(0)
    views = [transform(image) for _ in range(2)]
    assert views[0].shape == (3, 224, 224) and not torch.equal(views[0], views[1])
