"""Token features of a convolutional image tower (the real profile's photo CLIP) and patch-grid shapes."""

import pytest
import torch
import torch.nn.functional as F

from course_utils.models.tiny_clip import create_course_clip
from course_utils.models.tokens import image_token_features, patch_grid


@pytest.fixture(scope="module")
def photo_clip():
    torch.manual_seed(0)
    model, _, _ = create_course_clip("photo-clip-resnet18")
    return model.eval()


def test_conv_tower_tokens_are_its_feature_map_cells_led_by_the_pooled_summary(photo_clip):
    images = torch.randn(2, 3, 80, 60, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens, pooled = image_token_features(photo_clip, images)
        feature_map = photo_clip.visual.trunk.forward_features(images)  # (2, 512, 3, 2): 80 x 60 at stride 32
        projected = F.normalize(photo_clip.visual.head(tokens[:, 0]), dim=-1)
    assert tokens.shape == (2, 1 + 3 * 2, 512) and pooled.shape == (2, 256)
    assert torch.allclose(tokens[:, 1 + 1 * 2 + 0], feature_map[:, :, 1, 0])  # token 1 + r * cols + c = cell (r, c)
    assert torch.allclose(projected, pooled, atol=1e-5)  # the summary token is what the projection pools
    patches, _ = image_token_features(photo_clip, images, block_from_end=2, class_token=False)
    assert patches.shape == (2, 5 * 4, 256)  # the previous stage, stride 16, no summary token
    assert patch_grid(photo_clip, 6) == (3, 2) and patch_grid(photo_clip, 20) == (5, 4)


def test_patch_grid_of_a_vit_is_the_stated_grid():
    model, _, _ = create_course_clip("tiny-fashion-clip")
    assert patch_grid(model, 64) == (8, 8)
    assert patch_grid(model, 16) == (4, 4)  # another block's count: the square factorisation of a square input
