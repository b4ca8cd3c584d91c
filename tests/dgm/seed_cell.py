# The seed's VAE cell (seeds/000_b580ceec37384085.txt, In [19] and In [32]) as written there, with
# two changes only: its imports point at fastgen.dgm instead of pixyz, and x_dim is the digits'
# 64 pixels instead of MNIST's 784. tests/dgm/test_dgm_seed_example.py runs it with exec() after
# defining what the seed's earlier cell defines (torch, nn, F, optim, tqdm, train_loader).
from fastgen.dgm.distributions import Normal, Bernoulli
from fastgen.dgm.losses import KullbackLeibler, StochasticReconstructionLoss
from fastgen.dgm.models import VAE, Model
from fastgen.dgm.utils import print_latex
x_dim = 64
z_dim = 64
device = 'cuda' if torch.cuda.is_available() else 'cpu'

# Distribution APIの良さみ
class Inference(Normal):
    def __init__(self):
        super(Inference, self).__init__(cond_var=['x'], var=['z'], name='q')
        self.fc1 = nn.Linear(x_dim, 512)
        self.fc2 = nn.Linear(512, 512)
        self.fc31 = nn.Linear(512, z_dim)
        self.fc32 = nn.Linear(512, z_dim)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        h = F.relu(self.fc2(h))
        return {'loc': self.fc31(h), 'scale': F.softplus(self.fc32(h))}


# generative model p(x|z)
class Generator(Bernoulli):
    def __init__(self):
        super(Generator, self).__init__(cond_var=['z'], var=['x'], name='p')

        self.fc1 = nn.Linear(z_dim, 512)
        self.fc2 = nn.Linear(512, 512)
        self.fc3 = nn.Linear(512, x_dim)

    def forward(self, z):
        h = F.relu(self.fc1(z))
        h = F.relu(self.fc2(h))
        return {'probs': torch.sigmoid(self.fc3(h))}

# distributions API
p = Generator().to(device)
q = Inference().to(device)

prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.),
              var=['z'], features_shape=[z_dim], name='p_{prior}').to(device)
# distributions APIに従うことでsample()だったり, 分布の掛け算などが手軽に定義できる
# 生成過程を確率分布によってモデル化するという意識を忘れずに，今自分は何を実装しているんだ？と確認させてくれる
# オレオレ実装が少なくなり得る可能性はここにあるのか？

# 確率分布として扱うからこそのloss APIの融通
kl = KullbackLeibler(q, prior)
reconst = StochasticReconstructionLoss(q, p)
loss = (kl + reconst).mean()

# これがさらに上位のmodel APIによっていい感じに定義できる
model = Model(loss=loss, distributions=[p, q],
             optimizer=optim.Adam, optimizer_params={'lr': 1e-3})

def train(epoch):
    train_loss = 0
    for x, _ in tqdm(train_loader):
        x = x.to(device)
        loss = model.train({'x': x})
        train_loss += loss

    train_loss = train_loss * train_loader.batch_size / len(train_loader.dataset)
    print('Epoch: {} Train loss: {:.4f}'.format(epoch, train_loss))
    return train_loss
