"""Distribution metrics that work offline: FID on a project-trained Fashion-MNIST feature network (or on
Inception-v3 where its weights are present), and exact distances to known Gaussian mixtures."""
