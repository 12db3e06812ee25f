"""Tasks: each module owns one task's data sampling, training recipe and evaluation, and returns plain records.

=================  =========================================================  ==========
module             task                                                        notebook
=================  =========================================================  ==========
``experiment``     catalogue x model: what every notebook evaluates            all
``pretrain``       the embedded tiny CLIP's pretraining                        01
``photo_pretrain`` the course CLIP pretrained on real photos (real profile)    01
``retrieval``      text–image retrieval: fine-tuning recipes, recall           01 02 04
``rerank``         re-ranking the dual encoder's top-K with a cross-encoder    03
``attributes``     attribute-specific retrieval, conditional embeddings        05
``composed``       composed image + text retrieval                             06
=================  =========================================================  ==========

``python -m course_utils.evaluate`` runs any of them from the command line (CLIP_benchmark's single entry point).
"""

from . import attributes, composed, experiment, photo_pretrain, pretrain, rerank, retrieval
from .experiment import Experiment, exercises_scope, load_experiment, names_value, stated_share
