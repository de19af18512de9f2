# nbdev 2 setup.py, trimmed: reads settings.ini; no `pkg_resources` (current setuptools no longer ships it), an SPDX
# license expression instead of the deprecated license classifier, and the extras `lessons`, `metrics` and `dev`.
from configparser import ConfigParser
import setuptools, shlex, warnings
from setuptools.warnings import InformationOnly

# nbdev's flat layout keeps tadsr/ beside setup.py, so every editable install would print setuptools' 11-line notice
# that a folder named like the package in the working directory can shadow it. Here that folder *is* the package.
warnings.filterwarnings('ignore', message='Editable installation', category=InformationOnly)

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

expected = "lib_name version description keywords author license_spdx status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)

statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
status = next(s for s in statuses if s.startswith(cfg['status'] + ' '))   # settings.ini `status = 3` -> '3 - Alpha'
py_versions = '3.10 3.11 3.12 3.13'.split()
reqs = lambda key: shlex.split(cfg.get(key) or '')
lessons, metrics = reqs('lessons_requirements'), reqs('metrics_requirements')

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    keywords=cfg['keywords'],
    author=cfg['author'],
    license_expression=cfg['license_spdx'],
    classifiers=['Development Status :: ' + status,
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
                + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(cfg['min_python']):]],
    packages=['tadsr', 'tadsr.weights'],                     # tadsr.weights: data only (the shipped models)
    package_data={'tadsr.weights': ['*.safetensors', '*.json', '*.md']},
    install_requires=reqs('requirements'),
    extras_require={'lessons': lessons, 'metrics': metrics,
                    'dev': list(dict.fromkeys(lessons + metrics + reqs('dev_requirements')))},
    python_requires='>=' + cfg['min_python'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d'],
    },
)
