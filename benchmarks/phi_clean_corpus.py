"""Realistic, PHI-free cardiac MR reports in several house styles: the false-refusal corpus.

A PHI gate should refuse a report that still names a patient; it should not refuse one that
only carries clinical content. This generator writes reports of the second kind, with the
things a naive gate mistakes for identifiers: vendor and scanner names, eponymous diseases and
criteria, slash forms ("132/78 mmHg", "3/12", "54/M"), ratios ("Qp:Qs 1.1:1"), ranges with
en-dashes, decimal commas, thousands separators, segment lists and follow-up intervals.

The vocabulary comes from public reporting standards (SCMR standardized reporting, the AHA
17-segment model, vendor product and sequence names, classification criteria) and general
knowledge. It was written without reading the gate (`rewrite/phi.py`, `rewrite/phi_detector.py`)
or the synthetic cohort, so a measurement on it is not one the gate was tuned on.

No report holds a name, date, time of day, identifier, phone number, address, institution or
e-mail; ages are 14-88. `make_clean_report` returns the text, its house style and 6-12
clinical strings that appear verbatim in it (what a gate must keep).

    python benchmarks/phi_clean_corpus.py --seed 1 --n 200 --out clean.jsonl --show 3
"""

from __future__ import annotations

import argparse
import json
import random
import re
import textwrap
from pathlib import Path

STYLES = (
    "british_structured", "american_structured", "prose_dictation", "terse_telegraphic",
    "templated_tabular", "european_translated", "mixed_caps",
)  # fmt: skip

SEG_NAMES = (
    "basal anterior", "basal anteroseptal", "basal inferoseptal", "basal inferior",
    "basal inferolateral", "basal anterolateral", "mid anterior", "mid anteroseptal",
    "mid inferoseptal", "mid inferior", "mid inferolateral", "mid anterolateral",
    "apical anterior", "apical septal", "apical inferior", "apical lateral", "apex",
)  # fmt: skip
SCANNERS = (
    ("Siemens", "MAGNETOM Aera", (1.5,)), ("Siemens", "MAGNETOM Avanto fit", (1.5,)),
    ("Siemens", "MAGNETOM Sola", (1.5,)), ("Siemens", "MAGNETOM Skyra", (3.0,)),
    ("Siemens", "MAGNETOM Vida", (3.0,)), ("Siemens", "MAGNETOM Prisma", (3.0,)),
    ("Siemens", "Area", (1.5,)), ("Siemens", "Avanto", (1.5,)),
    ("Philips", "Ingenia", (1.5, 3.0)), ("Philips", "Achieva", (1.5, 3.0)),
    ("Philips", "Ingenia Elition X", (3.0,)), ("Philips", "Ingenia Ambition", (1.5,)),
    ("GE", "SIGNA Artist", (1.5,)), ("GE", "SIGNA Architect", (3.0,)),
    ("GE", "SIGNA Premier", (3.0,)), ("GE", "Signa HDxt", (1.5, 3.0)),
    ("GE", "SIGNA Explorer", (1.5,)), ("Canon", "Vantage Orian", (1.5,)),
    ("Canon", "Vantage Galan 3T", (3.0,)), ("Canon", "Vantage Titan", (1.5, 3.0)),
)  # fmt: skip
CINE = {
    "Siemens": ("TrueFISP", "bSSFP", "balanced SSFP"), "Philips": ("balanced FFE", "bTFE", "bSSFP"),
    "GE": ("FIESTA", "bSSFP", "2D FIESTA"), "Canon": ("TrueSSFP", "bSSFP"),
}  # fmt: skip
LGESEQ = {
    "Siemens": ("PSIR", "magnitude IR and PSIR", "MOCO PSIR", "single-shot PSIR"),
    "Philips": ("PSIR TFE", "3D IR-TFE", "PSIR"), "Canon": ("PSIR", "2D IR"),
    "GE": ("MDE", "PSIR MDE", "phase-sensitive inversion recovery", "3D LGE"),
}  # fmt: skip
T1SEQ = ("MOLLI 5(3)3", "MOLLI 5s(3s)3s", "ShMOLLI", "SASHA", "MOLLI 5(3)3 / 4(1)3(1)2")
T2SEQ = (
    "T2 mapping (T2-prepared bSSFP)", "T2 map (T2-prep bSSFP)", "GraSE T2 mapping", "T2-STIR",
    "black-blood T2-weighted STIR", "T2-weighted TSE with fat saturation",
)  # fmt: skip
COILS = (
    "18-channel body array", "32-channel cardiac coil", "dStream Torso coil", "phased-array coil",
    "AIR Anterior Array coil", "16-channel torso XL coil", "30-channel body array",
)  # fmt: skip
AGENTS = (  # generic, brands, mmol per mL, doses in mmol/kg
    ("gadobutrol", ("Gadovist", "Gadavist"), 1.0, (0.1, 0.15, 0.2)),
    ("gadoterate meglumine", ("Dotarem", "Clariscan"), 0.5, (0.1, 0.15, 0.2)),
    ("gadobenate dimeglumine", ("MultiHance",), 0.5, (0.1, 0.05)),
    ("gadoteridol", ("ProHance",), 0.5, (0.1, 0.2)),
)  # fmt: skip
VIEWS = (
    ("short axis stack", "SAX stack", "SA stack", "contiguous short-axis"),
    ("4CH", "four-chamber", "HLA"), ("2CH", "two-chamber", "VLA"), ("3CH", "LVOT", "three-chamber"),
)  # fmt: skip
UK = {
    "edema": "oedema", "hemodynamic": "haemodynamic", "ischemic": "ischaemic", "anemia": "anaemia",
    "ischemia": "ischaemia", "center": "centre", "characterization": "characterisation",
    "hemorrhage": "haemorrhage", "artifact": "artefact", "dyspnea": "dyspnoea", "fiber": "fibre",
    "optimize": "optimise", "optimization": "optimisation", "recognized": "recognised",
    "favor": "favour", "thalassemia": "thalassaemia", "hemosiderin": "haemosiderin",
    "localizers": "localisers", "hemodynamically": "haemodynamically", "favoring": "favouring",
    "hemochromatosis": "haemochromatosis", "hematology": "haematology",
    "catheterization": "catheterisation", "revascularization": "revascularisation",
}  # fmt: skip

# A scenario: indications, value ranges over the normal ones, LGE (pattern, segment sets,
# territory), impression headlines, criteria, extra findings, recommendations, follow-up.
# "[[x]]" marks a clinical string to keep; "<a-b:d>" draws a number with d decimals.
SCEN: dict[str, dict] = {
    "normal": dict(
        ind=["atypical chest pain, unobstructed coronary arteries on CT", "palpitations with "
             "frequent ventricular ectopy on [[Holter]]", "family history of dilated cardiomyopathy"
             ", screening", "lateral T-wave inversion on ECG", "[[Brugada]] pattern on ECG, "
             "structural assessment", "[[Wolff-Parkinson-White]] pattern, pre-ablation",
             "[[Kawasaki]] disease in childhood, coronary surveillance", "athlete with borderline "
             "wall thickness on echo", "dyspnea, poor echo windows"],
        head=["Structurally normal heart", "Normal biventricular size and systolic function "
              "(LVEF {ef})", "No CMR evidence of cardiomyopathy"],
        recs=["No further cardiac imaging is required", "Discharge to primary care if symptoms "
              "settle", "[[Holter]] monitoring if palpitations persist"],
        fu=["no routine imaging follow-up", "clinic review in [[6 weeks]]", "review as required"]),
    "dcm": dict(
        ind=["new heart failure with reduced EF on echo", "dyspnea, [[NYHA class II-III]], LV "
             "dilatation on echo", "?etiology of LV systolic dysfunction", "LBBB and reduced EF, "
             "unobstructed coronaries"],
        v=dict(lvedvi=(118, 175), lvef=(18, 42), lvmi=(70, 105), wall=(6, 10), rvef=(35, 55),
               t1d=(40, 110), ecv=(29, 36)),
        lge=[("mid-wall", [[2, 3, 8, 9], [3, 9], [8, 9, 14], [2, 3]], "septum"), None],
        lgei="in a non-ischemic pattern",
        head=["Dilated LV with {fn} systolic function (LVEF {ef}), in keeping with a non-ischemic "
              "dilated cardiomyopathy", "{size} LV with {fn} systolic function, LVEF {ef}"],
        crit=["No infarct-pattern LGE; appearances favor [[DCM]] over ischemic cardiomyopathy",
              "Septal mid-wall fibrosis is a recognized marker of arrhythmic risk"],
        recs=["Consider [[genetic testing]] and first-degree family screening", "Optimize "
              "guideline-directed medical therapy", "Consider [[ICD]] evaluation if LVEF remains "
              "[[≤ 35%]] on optimal therapy"],
        fu=["repeat CMR in [[6-12 months]] on optimal therapy", "follow-up in [[3/12]] in the "
            "heart failure clinic"]),
    "hcm": dict(
        ind=["LVH on echo with systolic anterior motion", "family history of HCM (first-degree "
             "relative)", "deep T-wave inversion on ECG", "exertional syncope, ?HCM",
             "[[Noonan]] syndrome with LVH"],
        v=dict(wall=(16, 28), lvmi=(85, 140), lvef=(62, 78), lvedvi=(55, 85), t1d=(30, 80),
               ecv=(28, 34)),
        lge=[("patchy mid-wall", [[2, 3, 8, 9], [3, 9], [8, 9]], "RV insertion points"),
             ("patchy", [[13, 14, 15, 16, 17]], "apical segments"), None],
        lgei="typical of hypertrophic cardiomyopathy",
        head=["Asymmetric septal hypertrophy (maximal wall thickness {wall}) consistent with "
              "hypertrophic cardiomyopathy", "Hypertrophic cardiomyopathy phenotype, LVEF {ef}"],
        crit=["LGE extent [[<3-14:0>{pct} of LV mass]]", "[[HCM Risk-SCD]] 5-year risk "
              "[[<1.5-7.5:1>{pct}]]", "Meets the [[ESC 2014]] diagnostic threshold (wall "
              "thickness [[≥ 15 mm]])", "[[Maron classification]] type III distribution",
              "Phenotype meets the [[2023 ESC cardiomyopathy guidelines]] definition"],
        extra=["Systolic anterior motion of the anterior mitral leaflet with LVOT flow "
               "acceleration, peak velocity [[<2.5-4.5:1> m/s]].", "Myocardial crypts in the "
               "basal inferior wall.", "No apical aneurysm."],
        recs=["Refer to the [[inherited cardiac conditions service]]", "Consider [[genetic "
              "testing]] and cascade screening", "[[48-hour Holter]] monitoring"],
        fu=["[[annual surveillance]]", "repeat CMR in [[2 years' time]]", "review in [[12/12]]"]),
    "myocarditis": dict(
        ind=["chest pain, troponin rise, unobstructed coronaries", "?myocarditis after a viral "
             "illness", "MINOCA work-up", "ST elevation with normal angiogram, [[TIMI 3]] flow"],
        v=dict(lvef=(45, 62), t1d=(60, 140), t2d=(6, 14), ecv=(30, 40)),
        lge=[("subepicardial", [[5, 6, 11, 12], [5, 11], [4, 5, 10, 11], [6, 12, 16]],
              "lateral wall"), ("patchy mid-wall and subepicardial", [[3, 4, 9, 10]],
              "inferoseptum")],
        lgei="in a non-ischemic pattern", t2=True,
        head=["Acute myocarditis with {fn} LV systolic function (LVEF {ef})",
              "Findings consistent with acute myocarditis"],
        crit=["Fulfils the [[2018 Lake Louise criteria]] (T2-based and T1-based criterion)",
              "Both main criteria of the [[revised Lake Louise criteria]] are met",
              "Endomyocardial biopsy ([[Dallas criteria]]) not required on these findings"],
        extra=["Small pericardial effusion adjacent to the lateral wall.", "Regional edema on "
               "[[T2-STIR]] corresponding to the LGE."],
        recs=["Suggest correlation with [[troponin]] and inflammatory markers", "Avoid "
              "competitive sport for [[3-6 months]]"],
        fu=["repeat CMR in [[3-6 months]] to assess resolution of edema", "follow-up in "
            "[[6/12]]"]),
    "ischemic": dict(
        ind=["recent NSTEMI, viability before revascularization", "known CAD, ?inducible "
             "ischemia", "anterior STEMI treated with primary PCI", "inferior MI, [[Killip "
             "class I]]", "angina [[CCS class II]], equivocal functional testing"],
        v=dict(lvef=(30, 52), lvedvi=(85, 130)),
        lge=[("subendocardial", [[1, 7, 13, 14], [7, 13, 17], [1, 2, 7, 8, 13, 14, 17]],
              "LAD territory"), ("transmural", [[4, 10, 15], [4, 10]], "RCA territory"),
             ("subendocardial", [[5, 6, 11, 12]], "circumflex territory")],
        lgei="in an ischemic (coronary) distribution", stress=True, rwma=True,
        head=["Myocardial infarction in the territory shown, LVEF {ef}", "Ischemic "
              "cardiomyopathy with {fn} LV systolic function (LVEF {ef})"],
        crit=["Transmurality [[< 50%]] in most affected segments, favoring viability",
              "Microvascular obstruction within the infarct core", "No LV thrombus"],
        extra=["Small apical LV thrombus ([[<8-18:0> x <5-12:0> mm]]).", "Thinned, akinetic "
               "infarcted wall (end-diastolic thickness [[<3-5:0> mm]])."],
        recs=["Discuss at the heart team meeting regarding revascularization", "Optimize "
              "anti-anginal therapy"],
        fu=["clinic review in [[6 weeks]]", "review in [[6/52]]", "repeat CMR in [[12 months]]"]),
    "amyloid": dict(
        ind=["HFpEF with LVH and low-voltage ECG", "?cardiac amyloidosis, [[Perugini grade 2]] "
             "uptake on DPD scintigraphy", "known AL amyloidosis, ?cardiac involvement",
             "bilateral carpal tunnel syndrome and LVH"],
        v=dict(wall=(13, 19), lvmi=(85, 130), lvef=(40, 60), t1d=(120, 220), ecv=(42, 68)),
        lge=[("diffuse circumferential subendocardial", [list(range(1, 17))], "LV"),
             ("diffuse transmural", [list(range(1, 13))], "basal and mid LV")],
        lgei="typical of cardiac amyloidosis", age=(55, 88),
        head=["Appearances typical of cardiac amyloidosis", "Infiltrative cardiomyopathy, most "
              "likely amyloid, LVEF {ef}"],
        crit=["[[ATTR]] and [[AL]] types cannot be distinguished on CMR", "ECV [[> 40%]] supports "
              "the diagnosis (see [[Dorbala]] multimodality consensus)"],
        extra=["Abnormal nulling on the [[TI scout]]: blood pool nulls before myocardium.",
               "Biatrial enlargement with a thickened interatrial septum.", "Small bilateral "
               "pleural effusions."],
        recs=["Suggest serum free light chains and immunofixation to exclude [[AL amyloidosis]]",
              "Refer to a specialist amyloidosis service"],
        fu=["follow-up in [[3/12]]", "clinic review in [[6 weeks]]"]),
    "sarcoid": dict(
        ind=["pulmonary sarcoidosis, cardiac screening", "complete heart block in a young "
             "patient", "VT of unknown cause"],
        v=dict(lvef=(42, 60), t2d=(0, 8)),
        lge=[("patchy mid-wall and subepicardial", [[2, 3, 8], [3, 4, 9], [2, 8, 9, 14]],
              "basal septum extending to the RV side")],
        lgei="in a pattern suggestive of cardiac sarcoidosis",
        head=["Findings suspicious for cardiac sarcoidosis", "Non-ischemic LGE, LVEF {ef}"],
        crit=["Would support cardiac involvement under the [[Japanese Circulation Society "
              "criteria]] ([[JCS 2016]])"],
        extra=["Bilateral hilar and mediastinal lymphadenopathy."],
        recs=["Recommend [[FDG-PET]] to assess active inflammation", "Device assessment "
              "(conduction disease)"],
        fu=["repeat imaging in [[3-6 months]] after treatment"]),
    "arvc": dict(
        ind=["frequent LBBB-morphology ectopy, ?ARVC", "first-degree relative with ARVC",
             "syncope with epsilon waves"],
        v=dict(rvedvi=(110, 165), rvef=(28, 44), lvef=(50, 62)),
        lge=[("subepicardial", [[5, 6, 11]], "inferolateral wall"), None],
        lgei="with RV free wall enhancement", age=(14, 60),
        head=["Dilated RV with regional dyskinesia, consistent with arrhythmogenic "
              "cardiomyopathy", "RV dilatation and dysfunction (RVEF {rvef})"],
        crit=["Meets a [[major criterion]] of the [[2010 Task Force criteria]] (regional "
              "dyskinesia with RVEDVi [[≥ 110 mL/m²]])", "[[Padua criteria]] for "
              "left-dominant involvement not met"],
        extra=["Regional RV dyskinesia of the subtricuspid region with a microaneurysm.",
               "Accordion sign in the RV free wall."],
        recs=["Refer to the [[inherited cardiac conditions service]]", "[[Holter]] and "
              "signal-averaged ECG"],
        fu=["[[annual surveillance]]", "repeat CMR in [[1-2 years]]"]),
    "lvnc": dict(
        ind=["prominent trabeculation on echo", "family screening, relative with LV "
             "non-compaction"],
        v=dict(lvef=(45, 60), lvedvi=(90, 125)),
        lge=[None],
        head=["Excessive trabeculation of the LV, LVEF {ef}", "Hypertrabeculated LV"],
        crit=["Maximal NC/C ratio [[<2.4-3.6:1>]] ([[Petersen criteria]] NC/C [[> 2.3]])",
              "Trabeculated LV mass [[<18-32:0>{pct}]] of global mass ([[Jacquier]] threshold "
              "20%)", "Does not meet [[Jenni criteria]] on systolic images", "[[Stöllberger]] "
              "criteria are echocardiographic and not applied here"],
        extra=["Prominent trabeculation of the apical and mid lateral walls."],
        recs=["Consider [[genetic testing]] if LV function declines"],
        fu=["repeat CMR in [[2 years' time]]", "[[annual surveillance]]"]),
    "storage": dict(
        ind=["[[Anderson-Fabry disease]], cardiac assessment", "LVH with renal impairment and "
             "angiokeratoma", "[[Danon]] disease, cardiac assessment", "[[Pompe]] disease, "
             "cardiac assessment"],
        v=dict(wall=(12, 18), lvmi=(75, 110), t1d=(-160, -80)),
        lge=[("mid-wall", [[5], [5, 11], [4, 5]], "basal inferolateral wall")],
        lgei="typical of storage disease",
        head=["Concentric LVH with low native T1, in keeping with a storage cardiomyopathy",
              "LVH (maximal wall thickness {wall}) with low native T1"],
        crit=["Low native T1 consistent with sphingolipid storage in [[Anderson-Fabry disease]]"],
        recs=["Discuss with the metabolic team regarding enzyme replacement therapy"],
        fu=["[[annual surveillance]]", "repeat CMR in [[12 months]]"]),
    "takotsubo": dict(
        ind=["chest pain after emotional stress, apical ballooning on ventriculogram"],
        v=dict(lvef=(30, 48), t2d=(8, 16), t1d=(40, 90)),
        lge=[None], t2=True, age=(45, 88),
        head=["Appearances consistent with [[Takotsubo]] syndrome, LVEF {ef}"],
        crit=["No LGE, which helps exclude infarction and myocarditis"],
        extra=["Mid and apical akinesia with basal hyperkinesis (apical ballooning).",
               "Apical edema on T2 mapping without corresponding LGE."],
        recs=["Suggest correlation with [[troponin]] trend"],
        fu=["repeat CMR in [[3 months]] to confirm recovery"]),
    "valve": dict(
        ind=["bicuspid aortic valve, quantification of aortic regurgitation", "aortic "
             "regurgitation, discordant echo grading", "[[Marfan]] syndrome, aortic root "
             "surveillance", "aortic surveillance after a [[Bentall]] procedure",
             "surveillance after the [[Ross procedure]]"],
        v=dict(lvedvi=(100, 140), lvef=(52, 64)),
        lge=[None], flow="ar",
        head=["{fn} LV systolic function with LV dilatation (LVEDVi {edvi})", "Significant "
              "aortic regurgitation with LV volume loading"],
        crit=["Moderate to severe aortic regurgitation", "Holodiastolic flow reversal in the "
              "descending aorta"],
        extra=["Aortic root [[<38-48:0> mm]] at the sinuses of Valsalva; ascending aorta "
               "[[<34-44:0> mm]]."],
        recs=["Discuss at the valve multidisciplinary meeting"],
        fu=["[[annual surveillance]] CMR", "repeat in [[12 months]]"]),
    "congenital": dict(
        ind=["repaired tetralogy of Fallot, surveillance", "[[Ebstein]] anomaly, RV assessment",
             "[[Fontan]] circulation surveillance", "[[Mustard]] repair for transposition",
             "[[Senning]] repair, systemic RV assessment", "bidirectional [[Glenn]], pre-Fontan "
             "assessment", "staged palliation after [[Norwood]]", "ASD with [[Eisenmenger]] "
             "physiology"],
        v=dict(rvedvi=(120, 180), rvef=(38, 52)), lge=[None], flow="pr", age=(14, 45),
        head=["Dilated RV (RVEDVi {rvedvi}) with {rvfn} systolic function"],
        crit=["Pulmonary regurgitant fraction [[<25-45:0>{pct}]]", "RVEDVi approaching the usual "
              "threshold for pulmonary valve replacement"],
        recs=["Discuss at the adult congenital heart disease meeting"],
        fu=["[[annual surveillance]]", "repeat CMR in [[2 years' time]]", "review in "
            "[[12/12]]"]),
    "pericardial": dict(
        ind=["recurrent pericarditis", "?constrictive pericarditis, dyspnea and raised JVP"],
        v=dict(), lge=[None], peri=True,
        head=["Pericardial thickening and enhancement in keeping with active pericarditis",
              "Features of constrictive physiology"],
        extra=["Pericardium thickened to [[<4-7:0> mm]] with enhancement on LGE.", "Septal "
               "bounce on real-time cine with respiratory ventricular interdependence."],
        recs=["Correlate with CRP", "Consider [[right and left heart catheterization]]"],
        fu=["repeat CMR in [[3 months]]"]),
    "inflammatory": dict(
        ind=["[[EGPA]] (Churg-Strauss) with eosinophilia and troponin rise", "?[[Loeffler "
             "endocarditis]], hypereosinophilia", "[[Chagas]] serology positive, VT",
             "[[Duchenne]] muscular dystrophy, annual cardiac surveillance", "[[Becker]] "
             "muscular dystrophy", "[[Friedreich ataxia]], cardiac assessment"],
        v=dict(lvef=(38, 58), t1d=(40, 100), ecv=(30, 38)),
        lge=[("subendocardial", [[13, 14, 15, 16, 17]], "apical segments"),
             ("subepicardial", [[5, 6, 11, 12], [4, 5, 10, 11]], "inferolateral wall")],
        lgei="in a non-ischemic pattern",
        head=["Non-ischemic LGE with {fn} LV systolic function (LVEF {ef})"],
        crit=["No apical thrombus", "Findings in keeping with the known systemic disease"],
        recs=["Discuss with the referring team regarding immunosuppression"],
        fu=["repeat CMR in [[6-12 months]]", "[[annual surveillance]]"]),
    "iron": dict(
        ind=["[[thalassemia major]], iron overload assessment", "hereditary hemochromatosis"],
        v=dict(t1d=(-180, -90)), lge=[None], age=(14, 60),
        head=["Myocardial iron loading ([[T2* <8-19:0> ms]])", "Moderate myocardial iron "
              "overload with preserved LVEF ({ef})"],
        crit=["Myocardial [[T2* < 20 ms]] indicates iron loading", "Liver T2* reduced"],
        recs=["Discuss chelation intensification with hematology"],
        fu=["repeat [[T2*]] CMR in [[12 months]]", "repeat in [[6/12]]"]),
}  # fmt: skip

UNITS = dict(  # unit spellings; one of each is drawn per report
    vi=("mL/m²", "ml/m²", "mL/m2", "ml/m2", "mL/m^2"), mi=("g/m²", "g/m2"), ms=("ms", "msec"),
    vol=("mL", "ml"), bsa=("m²", "m2"), pct=("%",), sp=(" ",),
)  # fmt: skip
STYLE_UNITS = {
    "british_structured": dict(vi=("mL/m²", "ml/m²", "mL/m2"), ms=("ms",)),
    "american_structured": dict(vi=("ml/m2", "mL/m2", "mL/m^2"), vol=("mL", "ml", "cc")),
    "prose_dictation": dict(ms=("ms", "msec", "milliseconds"), vol=("mL", "ml", "cc")),
    "terse_telegraphic": dict(vi=("ml/m2", "mL/m2"), mi=("g/m2",), sp=(" ", "")),
    "european_translated": dict(vi=("ml/m²", "ml/m2"), vol=("ml",), pct=(" %", "%")),
}
UK_STYLE = {"british_structured": True, "american_structured": False, "mixed_caps": True}


SHORT = dict(zip(STYLES, ("uk", "us", "prose", "terse", "table", "eu", "mixed"), strict=True))
# Phrase templates; "key.uk" / "key.terse" ... overrides "key" for one house style.
P = {
    "title": ("CARDIAC MRI REPORT", "CARDIOVASCULAR MAGNETIC RESONANCE (CMR) REPORT", "CARDIAC MR",
              "MRI HEART WITH AND WITHOUT CONTRAST", "Examination: CMR with contrast",
              "CMR - FUNCTION, TISSUE CHARACTERIZATION AND LGE", "CMR STUDY REPORT"),
    "title.prose": ("CMR REPORT", "Cardiac MR", "Dictated report - cardiac MRI", "CARDIAC MRI"),
    "title.eu": ("Cardiac magnetic resonance imaging at {f} ({vendor} {model})",
                 "CMR examination ({f}, {vendor} {model})", "Cardio-MRI at {f}"),
    "sign": ("Reported by: consultant cardiac radiologist", "Reported by: consultant "
             "cardiologist (SCMR Level 3)", "Reporting clinician: CMR fellow, verified by "
             "consultant", "Reported jointly by cardiology and radiology consultants"),
    "sign.us": ("Interpreted by: attending cardiologist, Level III CMR", "Electronically "
                "signed by the interpreting radiologist.", "Attestation: I have personally "
                "reviewed the images and agree with the findings.", "Dictated by fellow; "
                "reviewed and approved by attending physician."),
    "sign.eu": ("Reporting physician: senior physician, cardiology", "Findings reviewed by the "
                "attending cardiologist.", "Senior consultant, department of radiology"),
    "who": ("{a}-year-old {man}", "{a}-year-old {male}", "{a} year old {gent}"),
    "who.terse": ("{a}{M}", "{a} y/o {M}", "{a}yo {male}", "{M}, {a}"),
    "who.eu": ("{a}-year-old {male}", "{Male} patient, {a} years"),
    "scanner": ("Performed on a {f} {sc} scanner ({coil}).", "{f} {sc}, {coil}, ECG-gated "
                "breath-hold imaging.", "CMR at {f} ({sc}) with retrospective ECG gating.",
                "Imaging at {f} on the {sc} with the {coil}."),
    "scanner.terse": ("{f} {sc}.", "{sc} {f}, {coil}.", "Scanner: {sc} ({f})."),
    "cine": ("{cine} cine imaging in the {views} views; native T1 mapping ({t1}) and {t2}.",
             "Cines ({cine}) in {views}. T1 mapping: {t1}. Edema imaging: {t2}.",
             "Standard protocol: {cine} cines ({views}), {t1} T1 mapping and {t2}."),
    "cine.terse": ("{cine} cine {sviews}. {t1}, {t2}.", "Cine {cine} ({sviews}); {t1}; {t2}."),
    "contrast": ("Contrast: {ag} ({ml} IV); {lge} LGE{scout} {when}, with post-contrast T1 "
                 "mapping for ECV.", "{ag} ({ml}) given; {lge} late enhancement imaging "
                 "{when}{scout}.", "LGE ({lge}) {when} following {ag}, total {ml}."),
    "contrast.terse": ("{ag} ({ml}). {lge} LGE {when}.", "Gd: {ag}, {ml}. LGE {lge} {when}."),
    "when": ("10 minutes post contrast", "8-12 min after injection", "at 10 min", "at 12 min",
             "10-15 minutes after contrast", "from 8 min post injection"),
    "nocontrast": ("No contrast given (eGFR {egfr}).", "Non-contrast study at the referrer's "
                   "request.", "Gadolinium not administered (eGFR {egfr})."),
    "stress": ("adenosine 140 mcg/kg/min", "adenosine 140 µg/kg/min for 3 min",
               "regadenoson 400 mcg", "regadenoson 0.4 mg IV bolus", "adenosine 210 mcg/kg/min"),
    "stresstech": ("Stress perfusion: {st} with first-pass perfusion in 3 SAX slices.",
                   "Pharmacological stress ({st}), first-pass perfusion, then rest perfusion."),
    "flowtech": ("Phase-contrast flow through the aortic and pulmonary valves.", "Through-plane "
                 "phase-contrast flow (aorta, MPA).", "Aortic and pulmonary flow quantification."),
    "misc": ("Scan time {min}.", "Good image quality.", "Mild respiratory artifact on the apical "
             "slices.", "Transaxial HASTE localizers.", "Arrhythmia-related artifact on some "
             "cine slices.", "Free-breathing motion-corrected LGE used."),
    "vitals": ("HR {hr}, BP {bp}, BSA {bsa}, {rhythm}.", "{Rhythm}, HR {hr}. BSA {bsa}.",
               "Height {h} cm, weight {kg} kg, BSA {bsa}. BP {bp}.", "BP {bp}; HR {hr}."),
    "lv": ("The left ventricle is {size} (LVEDVi {ed}, LVESVi {es}) with {fn} systolic "
           "function, LVEF {ef}.", "LV {size}: EDVi {ed}, ESVi {es}, EF {ef}; {fn} systolic "
           "function.", "Left ventricular end-diastolic volume index {ed}, end-systolic volume "
           "index {es}, ejection fraction {ef} ({fn} function); the LV is {size}."),
    "lv.terse": ("LV: {size}. LVEDVi {ed}, LVESVi {es}. LVEF {ef}.", "LV {size}, EDVi {ed}, "
                 "EF {ef}."),
    "lv.eu": ("Left ventricle {size} (LVEDV {edv}, LVEDVi {ed}), {fn} global systolic function "
              "(EF {ef}).", "LV {size} (EDV {edv}; {ed}) with {fn} global function, EF "
              "{ef}."),
    "mass": ("LV mass index {mi}; maximal wall thickness {wall} in the {wn}.", "Indexed LV mass "
             "{mi}. Maximum end-diastolic wall thickness {wall} ({wn}).", "Myocardial mass {mi}, "
             "max WT {wall} ({wn})."),
    "mass.terse": ("LVMi {mi}. Max WT {wall}.", "Mass {mi}, WT {wall}."),
    "mass.eu": ("Myocardial mass index {mi}, maximal wall thickness {wall} ({wn}).",),
    "rv": ("The right ventricle is {size} (RVEDVi {ed}) with {fn} systolic function (RVEF "
           "{ef}).", "RV {size}; RVEDVi {ed}, RVEF {ef} ({fn} function).", "Right ventricular "
           "volumes {size}: RVEDVi {ed}. RVEF {ef}."),
    "rv.terse": ("RV: {size}. RVEDVi {ed}. RVEF {ef}.", "RV {size}, RVEF {ef}."),
    "rv.eu": ("Right ventricle {size} (RVEDVi {ed}), {fn} systolic function (RVEF {ef}).",),
    "la": ("Both atria are normal in size.", "LA volume index {lavi}.", "LA area {laa}; RA area "
           "normal.", "Normal atrial dimensions."),
    "la.eu": ("Normal-sized atria.", "Left atrium {laa} (area)."),
    "lgey": ("There is {pat} {word} in the {terr} ({sp}), {interp}.", "{Pat} {word} involving "
             "the {terr} ({sp}), {interp}.", "{Word}: {pat}, {terr} ({sp}); {interp}."),
    "lgey.terse": ("LGE: {pat}, {terr}, {sp}.", "LGE {pat} {sp}."),
    "lgen": ("No late gadolinium enhancement to suggest myocardial scar or fibrosis.", "No "
             "myocardial LGE.", "No focal late enhancement.", "No LGE in a scar-type pattern."),
    "lgen.terse": ("No LGE.", "LGE: none.", "LGE neg."),
    "lgen.eu": ("No evidence of late enhancement.", "No late gadolinium enhancement."),
    "maps": ("Native T1 {t1} ({ref}{at}), T2 {t2} ({t2ref}).", "T1 {t1} [{ref}]; T2 {t2} "
             "[{t2ref}].", "Mapping: native T1 {t1} ({ref}{at}); T2 {t2} ({t2ref})."),
    "maps.terse": ("T1 {t1} ({ref}). T2 {t2}.", "Native T1 {t1}, T2 {t2} ({t2ref})."),
    "ecv": ("ECV {ecv} (normal {ecvref}).", "Extracellular volume {ecv} ({ecvref}).",
            "Calculated ECV {ecv}."),
    "valves": ("No significant valvular disease.", "Valves appear structurally normal.",
               "Trivial mitral regurgitation only.", "Tricuspid aortic valve, no significant "
               "stenosis or regurgitation."),
    "valves.eu": ("Valves without relevant pathology.", "No relevant valvular disease."),
    "fwd": ("Aortic forward flow {fwd}; Qp:Qs {qpqs}.", "Forward flow {fwd}, regurgitant "
            "fraction {rf}.", "Aortic SV {fwd}; Qp:Qs {qpqs}."),
    "peri": ("No pericardial effusion.", "Pericardium normal.", "No pericardial thickening or "
             "effusion.", "Small physiological pericardial fluid."),
    "peri.eu": ("Regular pericardium without effusion.", "No pericardial effusion."),
    "other": ("No significant extracardiac findings.", "Incidental simple hepatic cyst, no "
              "further action.", "Small hiatus hernia.", "Lung bases clear.", "Small renal "
              "cortical cyst, likely simple.", "Visualised lung bases unremarkable."),
    "compare": ("Compared with the previous CMR, appearances are similar", "Compared with the "
                "prior study, LVEF has changed from {ef0} to {ef}", "Prior study not available "
                "for comparison", "No previous CMR for comparison", "Unchanged since the "
                "previous CMR"),
    "ind": ("{who} with {ind}.", "{Who}, {ind}.", "{Ind}. {Who}."),
    "ind.terse": ("CMR. {who}, {ind}.", "?{dx}. {who}.", "{who}. {ind}."),
}  # fmt: skip
ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix")
BULLETS = ("{i}. ", "{i}) ", "({r}) ", "- ", "• ", "* ", "({i}) ", "{r}. ")
NORMS = {  # (label, key, unit, male range, female range): approximate adult CMR normals
    "m": [("LVEDVi", "lvedvi", "vi", "57-105"), ("LVESVi", "lvesvi", "vi", "14-38"),
          ("LVEF", "lvef", "%", "57-77"), ("LV mass index", "lvmi", "mi", "46-83"),
          ("RVEDVi", "rvedvi", "vi", "61-121"), ("RVESVi", "rvesvi", "vi", "19-55"),
          ("RVEF", "rvef", "%", "48-71")],
    "f": [("LVEDVi", "lvedvi", "vi", "56-96"), ("LVESVi", "lvesvi", "vi", "14-34"),
          ("LVEF", "lvef", "%", "57-77"), ("LV mass index", "lvmi", "mi", "37-67"),
          ("RVEDVi", "rvedvi", "vi", "55-105"), ("RVESVi", "rvesvi", "vi", "15-43"),
          ("RVEF", "rvef", "%", "51-73")],
}  # fmt: skip


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class Writer:
    """Per-report drawing state: house-style conventions and the clinical strings kept."""

    def __init__(self, rng: random.Random, style: str):
        self.rng, self.style, self.short = rng, style, SHORT[style]
        self.uk = UK_STYLE.get(style, rng.random() < 0.5)
        self.eu, self.terse = self.short == "eu", self.short == "terse"
        self.dec = "," if self.eu else "."
        self.thou = rng.choice([".", " ", ""] if self.eu else [",", ""])
        units = {**UNITS, **STYLE_UNITS.get(style, {})}
        self.u = {k: rng.choice(v) for k, v in units.items()}
        self.pct = self.u["pct"]
        self.kept: list[str] = []

    def ch(self, seq):
        return self.rng.choice(seq)

    def t(self, key: str, **kw) -> str:
        """A phrase template for this house style, filled in."""
        s = self.ch(P.get(f"{key}.{self.short}", P.get(key))).format(**kw)
        return cap(s) if s.split(" ", 1)[0].islower() else s

    def k(self, s: str) -> str:
        self.kept.append(s)
        return s

    def n(self, x: float, nd: int = 0) -> str:
        ip, _, fp = f"{x:.{nd}f}".partition(".")
        if len(ip.lstrip("-")) > 3 and self.thou:
            ip = ip[:-3] + self.thou + ip[-3:]
        return ip + (self.dec + fp if fp else "")

    def q(self, x: float, unit: str, nd: int = 0, keep: bool = True) -> str:
        """A quantity with its unit in this report's spelling, kept as a clinical string."""
        u = self.pct if unit == "%" else self.u["sp"] + self.u.get(unit, unit)
        s = self.n(x, nd) + u
        return self.k(s) if keep else s

    def fill(self, t: str, **kw) -> str:
        t = t.format(**{"pct": self.pct, "vol": self.u["vol"], "ms": self.u["ms"], **kw})
        num = r"<(-?[\d.]+)-(-?[\d.]+):(\d)>"
        t = re.sub(num, lambda m: self.n(self.rng.uniform(float(m[1]), float(m[2])), int(m[3])), t)
        return re.sub(r"\[\[(.+?)\]\]", lambda m: self.k(m[1]), t)

    def up(self, line: str) -> str:
        """Upper-case a line; the clinical strings inside it are kept in their new case."""
        for i, s in enumerate(self.kept):
            if s in line:
                self.kept[i] = s.upper()
        return line.upper()

    def wrap(self, text: str, width: int) -> list[str]:
        """textwrap that never breaks inside a clinical string."""
        for s in sorted(set(self.kept), key=len, reverse=True):
            text = text.replace(s, s.replace(" ", "\x00"))
        lines = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)
        return [x.replace("\x00", " ") for x in lines]


def seg_phrase(w: Writer, segs: list[int]) -> str:
    """Segment numbers in one of the ways reports write them (kept as a clinical string)."""
    a, b, n = segs[0], segs[-1], len(segs)
    if n == 1:
        return w.k(w.ch([f"segment {a}", f"AHA segment {a}", f"seg {a}", f"segment {a}/17"]))
    if n >= 10:
        return w.k(w.ch([f"{n}/17 segments", f"segments {a}-{b}", f"{n} of 17 AHA segments"]))
    listed = ", ".join(map(str, segs[:-1])) + f" and {b}"
    forms = [f"segments {listed}", f"AHA segments {listed}", "segs " + ",".join(map(str, segs))]
    forms.append(f"{n}/17 segments ({', '.join(map(str, segs))})")
    if segs == list(range(a, b + 1)):
        dash = w.ch(["-", "–", " to "])
        forms += [f"segments {a}{dash}{b}", f"AHA segments {a}{dash}{b}", f"segs {a}-{b}"]
    return w.k(w.ch(forms))


def fn_adj(w: Writer, ef: float, rv: bool = False) -> str:
    lo = 50 if rv else 55
    if ef >= lo:
        return w.ch(["normal", "preserved", "good"])
    grade = "mildly" if ef >= lo - 10 else "moderately" if ef >= 35 else "severely"
    return f"{grade} {w.ch(['impaired', 'reduced'] if w.uk else ['reduced', 'depressed'])}"


def size_adj(w: Writer, edvi: float, upper: float) -> str:
    if edvi <= upper:
        return w.ch(["normal in size", "not dilated", "non-dilated"])
    grade = "mildly" if edvi < upper + 20 else "moderately" if edvi < upper + 45 else "severely"
    return grade + " dilated"


def make_case(rng: random.Random) -> dict:
    """The clinical facts of one report, independent of how it is written."""
    name = rng.choice(list(SCEN))
    s, male = SCEN[name], rng.random() < 0.55
    vendor, model, fields = rng.choice(SCANNERS)
    field = rng.choice(fields)
    ranges = dict(lvedvi=(62, 98), lvef=(57, 70), wall=(7, 11), lvmi=(48, 78), rvedvi=(65, 104),
                  rvef=(50, 64), t1d=(-25, 25), t2d=(-3, 2), ecv=(22, 28), lavi=(22, 38),
                  hr=(52, 88), bsa=(1.75, 2.25), weight=(60, 110))  # fmt: skip
    if not male:
        ranges.update(lvedvi=(56, 90), lvmi=(38, 62), rvedvi=(58, 92), bsa=(1.5, 1.95))
    ranges.update(s.get("v", {}))
    c = {k: rng.uniform(*r) for k, r in ranges.items()}
    contrast = name not in ("normal", "valve", "congenital", "iron") or rng.random() > 0.1
    lge = rng.choice(s.get("lge", [None])) if contrast else None
    stress = contrast and (s.get("stress") or name == "normal") and rng.random() < 0.5
    c.update(name=name, s=s, male=male, age=rng.randint(*s.get("age", (18, 86))), lge=lge,
             vendor=vendor, model=model, field=field, contrast=contrast, stress=stress)  # fmt: skip
    c["lvesvi"] = c["lvedvi"] * (1 - c["lvef"] / 100)
    c["rvesvi"] = c["rvedvi"] * (1 - c["rvef"] / 100)
    c["segs"] = rng.choice(lge[1]) if lge else None
    hi = field > 2
    c["t1lo"] = rng.choice([1120, 1140, 1150] if hi else [940, 950, 960, 970])
    c["t1hi"] = rng.choice([1240, 1250, 1270] if hi else [1030, 1040, 1050, 1060])
    c["t1"] = (c["t1lo"] + c["t1hi"]) / 2 + c["t1d"]
    c["t2hi"] = rng.choice([44, 45, 46] if hi else [49, 50, 52])
    c["t2"] = c["t2hi"] - 4 + c["t2d"] + rng.uniform(-2, 1)
    c["ecvhi"] = rng.choice([28, 29, 30])
    return c


def field_str(w: Writer, f: float) -> str:
    v = w.n(f, 1) if (f < 2 or w.rng.random() < 0.4) else "3"
    return w.k(v + w.ch([" T", " Tesla"] if w.eu else [" T", "T", " Tesla", "-T"]))


def who(w: Writer, c: dict) -> str:
    m = c["male"]
    male, man, gent = ("male", "man", "gentleman") if m else ("female", "woman", "lady")
    return w.t("who", a=c["age"], man=man, male=male, gent=gent, M=male[0].upper(), Male=cap(male))


def indication(w: Writer, c: dict) -> str:
    wh, ind = who(w, c), w.fill(w.ch(c["s"]["ind"]))
    return w.t("ind", who=wh, Who=cap(wh), ind=ind, Ind=cap(ind), dx=c["name"].upper())


def technique(w: Writer, c: dict) -> list[str]:
    f, sc = field_str(w, c["field"]), w.k(c["model"])
    sc = f"{c['vendor']} {sc}" if w.rng.random() < 0.5 else sc
    views = [w.ch(v) for v in w.rng.sample(VIEWS, w.rng.randint(2, 4))]
    vs = ", ".join(views[:-1]) + " and " + views[-1]
    cine, t1, t2 = w.k(w.ch(CINE[c["vendor"]])), w.k(w.ch(T1SEQ)), w.k(w.ch(T2SEQ))
    out = [w.t("scanner", f=f, sc=sc, coil=w.ch(COILS))]
    out.append(w.t("cine", cine=cine, views=vs, sviews="/".join(views), t1=t1, t2=t2))
    if c["contrast"]:
        gen, brands, conc, doses = w.ch(AGENTS)
        brand, dose = w.ch(brands), w.ch(doses)
        name = w.ch([brand, gen, f"{brand} ({gen})", f"{gen} ({brand})"])
        ag = w.k(f"{name} {w.n(dose, 2 if dose == 0.15 else 1)} mmol/kg")
        ml = w.q(round(dose * c["weight"] / conc * 2) / 2, "vol", 1, keep=False)
        scout = w.ch(["", f" after a {w.k(w.ch(['TI scout', 'Look-Locker']))}"])
        lge, when = w.k(w.ch(LGESEQ[c["vendor"]])), w.k(w.ch(P["when"]))
        out.append(w.t("contrast", ag=ag, ml=ml, lge=lge, scout=scout, when=when))
    else:
        out.append(w.t("nocontrast", egfr=w.k(f"{w.rng.randint(18, 29)} mL/min/1.73 m²")))
    if c["stress"]:
        out.append(w.t("stresstech", st=w.k(w.ch(P["stress"]))))
    if c["s"].get("flow") or w.rng.random() < 0.4:
        out.append(w.t("flowtech"))
    if w.rng.random() < 0.5:
        out.append(w.t("misc", min=w.k(f"{w.rng.randint(35, 65)} min")))
    return out


def vitals(w: Writer, c: dict) -> str:
    bp = w.k(f"{w.rng.randint(105, 155)}/{w.rng.randint(60, 92)} mmHg")
    hr, bsa = w.k(f"{w.n(c['hr'])} bpm"), w.q(c["bsa"], "bsa", 2)
    af = c["name"] in ("amyloid", "valve") and w.rng.random() < 0.4
    rhythm = "atrial fibrillation" if af else "sinus rhythm"
    h, kg = w.rng.randint(150, 192), w.n(c["weight"])
    return w.t("vitals", bp=bp, hr=hr, bsa=bsa, rhythm=rhythm, Rhythm=cap(rhythm), h=h, kg=kg)


def findings(w: Writer, c: dict) -> dict[str, list[str]]:
    """Findings by structure, as lists of sentences (short lines for the terse style)."""
    s, r = c["s"], w.rng
    ed, es = w.q(c["lvedvi"], "vi"), w.q(c["lvesvi"], "vi")
    ef, mi, edv = w.q(c["lvef"], "%"), w.q(c["lvmi"], "mi"), w.q(c["lvedvi"] * c["bsa"], "vol")
    wall = w.q(c["wall"], "mm", 0 if r.random() < 0.6 else 1)
    size, fn = size_adj(w, c["lvedvi"], 98 if c["male"] else 90), fn_adj(w, c["lvef"])
    c["fmt"] = dict(ef=ef, fn=fn, size=cap(size), wall=wall, edvi=ed)
    wn = SEG_NAMES[r.choice([1, 2, 7, 8])] if c["wall"] > 14 else w.ch(["septum", "LV"])
    lv = [w.t("lv", size=size, Size=cap(size), ed=ed, es=es, ef=ef, fn=fn, edv=edv)]
    lv.append(w.t("mass", mi=mi, wall=wall, wn=wn))
    if c["segs"] and s.get("rwma"):
        names = [SEG_NAMES[i - 1] for i in c["segs"][:3]]
        lv.append(f"Regional akinesia of the {', '.join(names[:-1])} and {names[-1]} segments.")
    elif not c["segs"] or r.random() < 0.5:
        lv.append("No RWMA." if w.terse else "No regional wall motion abnormality.")
    if r.random() < 0.35:
        mapse, ci = w.q(r.uniform(9, 16), "mm"), w.q(r.uniform(2.2, 3.6), "L/min/m²", 1)
        lv.append(f"{w.k(w.ch(['MAPSE', 'Lateral MAPSE']))} {mapse}; cardiac index {ci}.")
    rved, rvef = w.q(c["rvedvi"], "vi"), w.q(c["rvef"], "%")
    rvsz, rvfn = size_adj(w, c["rvedvi"], 105 if c["male"] else 95), fn_adj(w, c["rvef"], True)
    c["fmt"].update(rvedvi=rved, rvef=rvef, rvfn=rvfn)
    rv = [w.t("rv", size=rvsz, ed=rved, ef=rvef, fn=rvfn)]
    if r.random() < 0.4:
        rv.append(f"TAPSE {w.q(r.uniform(14, 26), 'mm')}.")
    la = [w.t("la", lavi=w.q(c["lavi"], "vi"), laa=w.q(r.uniform(16, 26), "cm²"))]
    if c["lge"]:
        pat, _, terr = c["lge"]
        words = ["late gadolinium enhancement", "LGE"] + ([] if w.uk else ["delayed enhancement"])
        word, sp, interp = w.ch(words), seg_phrase(w, c["segs"]), s.get("lgei", "nonspecific")
        kw = dict(pat=pat, Pat=cap(pat), word=word, Word=cap(word), terr=terr, sp=sp)
        lge = [w.t("lgey", interp=interp, **kw)]
    else:
        lge = [w.t("lgen") if c["contrast"] else "LGE not assessed (non-contrast)."]
    lo, hi = w.n(c["t1lo"]), w.n(c["t1hi"])
    ref = w.ch([f"local normal {lo}-{hi} {w.u['ms']}", f"ref. {lo}–{hi}", f"normal < {hi}"])
    t1, t2, t2ref = w.q(c["t1"], "ms"), w.q(c["t2"], "ms"), w.k(f"normal < {c['t2hi']}")
    at = f" at {field_str(w, c['field'])}" if r.random() < 0.5 else ""
    tis = [w.t("maps", t1=t1, ref=w.k(ref), at=at, t2=t2, t2ref=t2ref)]
    if c["contrast"]:
        ecvref = w.k(f"< {c['ecvhi']}{w.pct}")
        tis.append(w.t("ecv", ecv=w.q(c["ecv"], "%"), ecvref=ecvref))
    if s.get("t2") and not w.terse:
        tis.append(w.ch(["Increased T2 signal in the same region.", "Myocardial edema on T2."]))
    if c["stress"] and c["segs"]:
        sp = seg_phrase(w, c["segs"][:2])
        tis.append(f"Inducible perfusion defect in the {c['lge'][2]} beyond the scar ({sp}).")
    elif c["stress"]:
        tis.append(w.ch(["No inducible perfusion defect.", "Stress perfusion normal."]))
    vol, flow = w.u["vol"], s.get("flow")
    qpqs = w.k(w.n(r.uniform(0.9, 1.3 if flow else 1.1), 1) + ":1")
    if flow == "ar":
        fwd, rf = w.q(r.uniform(95, 140), vol), w.q(r.uniform(22, 48), "%")
        vf = [f"Aortic forward flow {fwd}, regurgitant fraction {rf}; peak velocity "
              f"{w.q(r.uniform(1.4, 2.6), 'm/s', 1)}."]  # fmt: skip
    elif flow == "pr":
        vf = [f"Pulmonary regurgitant fraction {w.q(r.uniform(20, 45), '%')}; Qp:Qs {qpqs}."]
    else:
        vf = [w.t("valves")]
        if r.random() < 0.5:
            fwd, rf = w.q(r.uniform(60, 95), vol), w.q(r.uniform(1, 8), "%")
            vf.append(w.t("fwd", fwd=fwd, rf=rf, qpqs=qpqs))
    peri = [] if s.get("peri") else [w.t("peri")]
    extra = [w.fill(x) for x in s.get("extra", []) if r.random() < 0.7] + [w.t("other")]
    return {"Left ventricle": lv, "Right ventricle": rv, "Atria": la, "LGE": lge,
            "Tissue characterization": tis, "Valves and flow": vf, "Pericardium": peri,
            "Other": extra}  # fmt: skip


def impressions(w: Writer, c: dict) -> tuple[list[str], list[str]]:
    """(impression points, recommendation and follow-up points)."""
    s, crit = c["s"], c["s"].get("crit", [])
    pts = [w.fill(w.ch(s["head"]), **c["fmt"])]
    if c["lge"]:
        tail = s.get("lgei", "")
        pts.append(f"{cap(c['lge'][0])} LGE in {seg_phrase(w, c['segs'])}, {tail}".rstrip(", "))
    elif c["contrast"]:
        pts.append(w.ch(["No LGE", "No myocardial scar or fibrosis", "No late enhancement"]))
    if abs(c["t1d"]) > 40:
        ecv = c["contrast"] and c["ecv"] > 29
        pts.append(f"{'Raised' if c['t1d'] > 0 else 'Low'} native T1 ({w.q(c['t1'], 'ms')})"
                   + (f" and ECV ({w.q(c['ecv'], '%')})" if ecv else ""))  # fmt: skip
    pts += [w.fill(x) for x in w.rng.sample(crit, min(len(crit), w.rng.randint(1, 2)))]
    if w.rng.random() < 0.5:
        ef0 = w.q(c["lvef"] + w.rng.uniform(-9, 9), "%")
        pts.append(w.t("compare", ef0=ef0, ef=c["fmt"]["ef"]))
    return pts, [w.fill(w.ch(s["recs"])), cap(w.fill(w.ch(s["fu"])))]


def numbered(w: Writer, items: list[str]) -> list[str]:
    form = w.ch(BULLETS)
    return [
        form.format(i=i + 1, r=ROMAN[i]) + cap(x.rstrip(".")) + "." for i, x in enumerate(items)
    ]


def render_structured(w: Writer, c: dict, american: bool) -> list[str]:
    F, (pts, recs) = findings(w, c), impressions(w, c)
    ind = ["Clinical history", "History", "Indication"] if american else [
        "Clinical indication", "Clinical details", "Referral question"]  # fmt: skip
    out = [w.t("title"), "", f"{w.ch(ind).upper()}: {indication(w, c)}"]
    if w.rng.random() < 0.6:
        out.append(vitals(w, c))
    out.append(w.ch(["TECHNIQUE:", "PROTOCOL:", "SEQUENCES:"]) + " " + " ".join(technique(w, c)))
    if american and w.rng.random() < 0.6:
        out.append("COMPARISON: " + w.ch(["None.", "Prior echocardiogram (report only).",
                                          "No prior CMR available."]))  # fmt: skip
    out += ["", "FINDINGS:"]
    keys = list(F)
    if w.rng.random() < 0.5:  # some departments put tissue characterization first
        keys = keys[3:6] + keys[:3] + keys[6:]
    width = w.rng.choice([0, 0, 88, 100])
    for key in keys:
        head = key.upper() + ":" if american else w.ch([key + ":", key.upper() + ":"])
        if F[key]:
            line = f"{head} {' '.join(F[key])}"
            out += w.wrap(line, width) if width else [line]
    out += ["", w.ch(["IMPRESSION:", "CONCLUSION:", "SUMMARY:"])] + numbered(w, pts)
    if american:
        out += [f"RECOMMENDATION: {'. '.join(recs)}."]
    else:
        out += [w.ch(["RECOMMENDATION:", "PLAN:"])] + numbered(w, recs)
    return out + ["", w.t("sign")]


def render_prose(w: Writer, c: dict) -> list[str]:
    F, (pts, recs) = findings(w, c), impressions(w, c)
    intro = f"This {who(w, c)} was referred with {w.fill(w.ch(c['s']['ind']))}."
    p1 = [intro] + ([vitals(w, c)] if w.rng.random() < 0.4 else []) + technique(w, c)
    p2 = [x for v in F.values() for x in v]
    p3 = ["In summary: " + "; ".join(p.rstrip(".") for p in pts) + "."]
    p3 += [x.rstrip(".") + "." for x in recs]
    paras = [" ".join(p1), " ".join(p2), " ".join(p3)]
    if w.rng.random() < 0.4:
        paras = [paras[0] + " " + paras[1], paras[2]]
    out, width = [w.t("title"), ""], w.rng.randint(72, 100)
    for p in paras:
        out += w.wrap(p, width) + [""]
    return out + [w.t("sign")]


def render_terse(w: Writer, c: dict) -> list[str]:
    F, (pts, recs) = findings(w, c), impressions(w, c)
    out = [indication(w, c)] + ([vitals(w, c)] if w.rng.random() < 0.5 else [])
    out += technique(w, c)
    labels = ("", "", "Atria: ", "", "Maps: ", "Valves: ", "Peric: ", "Other: ")
    out += [lab + " ".join(v) for lab, v in zip(labels, F.values(), strict=True) if v]
    out += [w.ch(["Concl:", "Impression:", "Summary:", "Opinion:"])] + numbered(w, pts)
    return out + [w.ch(["F/U: ", "Plan: ", "Rec: "]) + "; ".join(recs) + "."]


def render_table(w: Writer, c: dict) -> list[str]:
    F, (pts, recs) = findings(w, c), impressions(w, c)
    m, tech = c["male"], technique(w, c)
    out = [w.t("title"), "", f"{'Age/Sex':<15}: {c['age']}/{'M' if m else 'F'}",
           f"{'Indication':<15}: {w.fill(w.ch(c['s']['ind']))}",
           f"{'Scanner':<15}: {tech[0]}", f"{'Sequences':<15}: {' '.join(tech[1:])}"]  # fmt: skip
    if w.rng.random() < 0.5:
        out.append(f"{'Vitals':<15}: {vitals(w, c)}")
    rows = [(lab, w.q(c[key], u), f"({ref})") for lab, key, u, ref in NORMS["m" if m else "f"]]
    rows.append(("Native T1", w.q(c["t1"], "ms"), f"({c['t1lo']}-{c['t1hi']})"))
    if c["contrast"]:
        rows.append(("ECV", w.q(c["ecv"], "%"), f"(< {c['ecvhi']})"))
    rows = w.rng.sample(rows, w.rng.randint(6, len(rows))) if w.rng.random() < 0.3 else rows
    if w.rng.random() < 0.5:
        out += ["", f"| {'Parameter':<14}| {'Value':<12}| Normal"]
        out += [f"| {a:<14}| {v:<12}| {r}" for a, v, r in rows]
    else:
        out += [""] + [f"{a:<16}{v:<14}{r}" for a, v, r in rows]
    out += ["", w.ch(["Findings:", "Comments:"])]
    bullet = w.ch(["- ", "* ", "• "])
    for key in ("LGE", "Tissue characterization", "Valves and flow", "Pericardium", "Other"):
        out += [bullet + x for x in F[key][:2]]
    out += ["", w.ch(["Conclusion:", "Impression:"])] + numbered(w, pts + recs)
    return out + ["", w.t("sign")]


def render_euro(w: Writer, c: dict) -> list[str]:
    F, (pts, recs) = findings(w, c), impressions(w, c)
    f, tech = field_str(w, c["field"]), technique(w, c)
    out = [w.t("title", f=f, vendor=c["vendor"], model=w.k(c["model"])), ""]
    out.append(w.ch(["Question: ", "Indication: ", "Clinical question: "]) + indication(w, c))
    if w.rng.random() < 0.5:
        out.append(vitals(w, c))
    out += ["Technique: " + " ".join(tech[1:]), "", w.ch(["Findings:", "Results:"])]
    out += [x for v in F.values() for x in v[:2]]
    out += ["", w.ch(["Assessment:", "Evaluation:", "Summary assessment:"])] + numbered(w, pts)
    return out + ["", "Recommendation: " + "; ".join(recs) + ".", "", w.t("sign")]


def render_mixed(w: Writer, c: dict) -> list[str]:
    F, (pts, recs) = findings(w, c), impressions(w, c)
    out = [w.t("title").upper(), "Clinical Details: " + indication(w, c), "SEQUENCES"]
    out += technique(w, c) + [w.ch(["Findings -", "FINDINGS", "Findings:"])]
    for key, v in F.items():
        if v:
            line = w.ch([key.upper() + ":", key + " -", key.upper() + " -"]) + " " + " ".join(v)
            shout = key == "Pericardium" or (key == "LGE" and not c["lge"])
            out.append(w.up(line) if shout else line)
    out.append(w.ch(["CONCLUSION", "Conclusion:", "OPINION:"]))
    caps = w.rng.random() < 0.4
    out += [w.up(x) if caps else x for x in numbered(w, pts)]
    return out + ["Recommendation: " + ". ".join(recs) + ".", w.t("sign")]


RENDER = {
    "british_structured": lambda w, c: render_structured(w, c, False),
    "american_structured": lambda w, c: render_structured(w, c, True),
    "prose_dictation": render_prose, "terse_telegraphic": render_terse,
    "templated_tabular": render_table, "european_translated": render_euro,
    "mixed_caps": render_mixed,
}  # fmt: skip


def to_uk(text: str) -> str:
    def sub(m: re.Match) -> str:
        uk = UK[m[0].lower()]
        return uk.upper() if m[0].isupper() else cap(uk) if m[0][0].isupper() else uk

    return re.sub(r"\b(" + "|".join(UK) + r")\b", sub, text, flags=re.I)


def make_clean_report(rng: random.Random, style: str | None = None) -> dict:
    """One PHI-free report: {"text", "style", "clinical"} with 6-12 kept clinical strings."""
    style = style or rng.choice(STYLES)
    for _ in range(20):
        w = Writer(rng, style)
        lines = RENDER[style](w, make_case(rng))
        while lines and not lines[-1]:
            lines.pop()
        if 8 <= len(lines) <= 40:
            break
    assert 8 <= len(lines) <= 40, (style, len(lines))
    text, kept = "\n".join(lines) + "\n", list(dict.fromkeys(w.kept))
    if w.uk:
        text, kept = to_uk(text), list(dict.fromkeys(to_uk(s) for s in kept))
    kept = [s for s in kept if s in text]
    assert len(kept) >= 6, (style, kept)
    clinical = rng.sample(kept, min(len(kept), rng.randint(6, 12)))
    for s in clinical:
        assert s in text, (style, s)
    return {"text": text, "style": style, "clinical": clinical}


def make_corpus(seed: int, n: int) -> list[dict]:
    """n reports, the styles spread evenly (in shuffled order), deterministic in the seed."""
    rng = random.Random(seed)
    styles = [STYLES[i % len(STYLES)] for i in range(n)]
    rng.shuffle(styles)
    return [make_clean_report(rng, st) for st in styles]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", type=Path, help="write the corpus here as JSONL")
    ap.add_argument("--show", type=int, default=0, help="print this many sample reports")
    args = ap.parse_args()
    corpus = make_corpus(args.seed, args.n)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", encoding="utf-8") as fh:
            for rec in corpus:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    for rec in corpus[: args.show]:
        print(f"===== {rec['style']} =====\n{rec['text']}clinical: {rec['clinical']}\n")
    counts = {s: sum(r["style"] == s for r in corpus) for s in STYLES}
    print(f"{len(corpus)} reports, seed {args.seed}: {counts}")


if __name__ == "__main__":
    main()
