#!/usr/bin/env bash
# The GPU figures of the model zoo (issue 20), for a lent GPU machine with torch but without omegaconf:
#   pip download --no-deps -d .whl omegaconf==2.4.0 antlr4-python3-runtime==4.13.2 (where pip works), then
#   run this from the repo root there; logs go to $OUT or ./gpu_logs.
OUT=${OUT:-gpu_logs}; mkdir -p $OUT; export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1; fi
set -o pipefail; export PYTHONUNBUFFERED=1
python3 benchmarks/throughput.py --model stylegan2 --job jobs/stylegan2_images_256.yaml --synthetic 512 --gpu --steps 150 2>&1 | grep -v Warning | tee $OUT/sg2_256.log
python3 benchmarks/throughput.py --model resnet --synthetic 50000 --classes 10 --channels 3 --gpu --steps 300 --set model.ngf=64 model.ndf=64 2>&1 | tee $OUT/resnet32.log
python3 benchmarks/throughput.py --model resnet --synthetic 50000 --classes 10 --channels 3 --gpu --steps 300 --set model.ngf=64 model.ndf=64 train.precision=bf16 2>&1 | tee $OUT/resnet32_bf16.log
python3 benchmarks/gpu_flags.py --steps 200 2>&1 | grep -v "last log step" | tee $OUT/flags.log
# issue 29: R3GAN with R1+R2 from the main D pass (its 64 px preset, schedules on) and the quickstart with
# averaged EMA BatchNorm statistics, cudnn.benchmark on (the default) against off
python3 benchmarks/throughput.py --model r3gan --job jobs/r3gan_images_64.yaml --synthetic 2048 --gpu --steps 150 --set scaling.num_workers=1 2>&1 | tee $OUT/r3gan_64.log
python3 benchmarks/throughput.py --model dcgan --job jobs/quickstart.yaml --synthetic 4096 --channels 1 --gpu --steps 300 --set train.cudnn_benchmark=false 2>&1 | tee $OUT/quickstart_nocudnnbench.log
python3 benchmarks/throughput.py --model dcgan --job jobs/quickstart.yaml --synthetic 4096 --channels 1 --gpu --steps 300 2>&1 | tee $OUT/quickstart.log
