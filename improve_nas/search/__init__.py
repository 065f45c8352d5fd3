"""What proposes the subnetworks the AdaNet engine trains: NASNet builders and generators.

    builders         NASNetBuilder (one NASNet-A candidate from hparams) and `improve-nas summary`'s description
    generators       simple (the same NASNet every iteration) and dynamic (a deeper and a wider one than the last)

Generators reach the engine only through `improve_nas.adanet.Generator`.
"""
