# Stage 1: the search (one seed each, 96 px, 8 epochs, last epoch), two lanes on 2 cores
bash reports/recipe/search.sh base96 reg96 & bash reports/recipe/search.sh eq96 noflip96 & wait
#   each row is: pneumo train --data ../shared/data/chest_xray --external-val ../shared/data/external_val \
#     --img-size 96 --epochs 8 --select last --seed 42 --split-seed 42 --out runs/recipe/NAME  + the recipe flags:
#   base96: (none)   eq96: --intensity equalize   reg96: --mixup 0.2 --label-smoothing 0.1 --aug-set erasing=0.5
#   noflip96: --no-aug flip        (eqreg96 was stopped after 2 epochs once eq96 showed no gain)
# Stage 1b (a later session): two more candidates on top of noflip96, same budget, two lanes
bash reports/recipe/search.sh noflipbal96 & bash reports/recipe/search.sh noflipwd96 & wait
#   noflipbal96: --no-aug flip --balance sampling     noflipwd96: --no-aug flip --weight-decay 0.05
#   and the best balanced row (noflipbal96) with a second seed (one lane, two TF threads):
TF_NUM_INTRAOP_THREADS=2 FAMILY=noflipbal96 bash reports/recipe/finalists.sh 43
# Stage 2: the winner (noflip96) with another seed, and the burned-in-text variant
bash reports/recipe/finalists.sh 43 & FAMILY=ovl96 bash reports/recipe/finalists.sh 42 & wait
# Stage 3: export the winner's two seeds (noflip96 s42, s43) as one graph, calibrate, table, ship
bash reports/recipe/ship.sh
# Stage 3 (a session with a GPU lent: one NVIDIA H200, 13 min of device time in all): the
# long schedules and larger inputs 2 cores could not afford, on Keras/JAX (no TensorFlow
# there), four lanes side by side; the run folders came back here and export with TF:
bash reports/recipe/gpu.sh g96e40-s42 g96e40-s43 & bash reports/recipe/gpu.sh g128e30-s42 g128e30-s43 &
bash reports/recipe/gpu.sh g96e40reg-s42 g224e30-s42 & bash reports/recipe/gpu.sh g96e80-s42 & wait
bash reports/recipe/gpu.sh g224e30-s43 & bash reports/recipe/gpu.sh g128e60-s42 & wait
#   (g96e80-s43 and -s44 ran in that second call too and were stopped at epochs 72 and 71 by
#   the device time; they are not in the table)
# Stage 4 (a session without a GPU, 2 CPU cores): the speed goal, one member at 160 px
# (~5 ms on one core) fine-tuned from the 224 px runs; one lane with both cores, ~2.7 min
# per epoch (finetune.sh), then the best row exported as the other rows were:
bash reports/recipe/finetune.sh ft160-s42 bn160-s42 bn160-s43 ft160e1-s43 ft160e1-s42
bash reports/recipe/finetune.sh ft112-s42 ft112-s43    # a 112 px pair, 5 epochs each (~1 min/epoch)
pneumo export --model runs/recipe/ft160e1-s42 --calib-data ../shared/data/chest_xray --out runs/export-ft160 --external-val ../shared/data/external_val
